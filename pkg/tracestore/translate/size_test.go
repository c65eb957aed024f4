package translate

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// SpanSize must equal the real encoding: wrap each span alone in a Traces
// with an empty resource and scope, and compare with what pdata sizes. The
// envelope is computed, not subtracted, because its length prefixes grow
// with the span.
func TestSpanSizeMatchesEncoding(t *testing.T) {
	td := richTrace()
	// Add what richTrace lacks: nested values, trace state, flags, empty
	// values, dropped counts, negative ints.
	s := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().AppendEmpty()
	s.SetTraceID(tid)
	s.SetSpanID(pcommon.SpanID{7, 7, 7, 7, 7, 7, 7, 7})
	s.TraceState().FromRaw("vendor=x")
	s.SetFlags(1)
	s.SetDroppedAttributesCount(300)
	s.SetDroppedEventsCount(2)
	s.SetDroppedLinksCount(1)
	s.Attributes().PutInt("neg", -5)
	s.Attributes().PutEmpty("empty")
	s.Attributes().PutStr("emptystr", "")
	sl := s.Attributes().PutEmptySlice("slice")
	sl.AppendEmpty().SetStr("a")
	sl.AppendEmpty().SetInt(1 << 40)
	mp := s.Attributes().PutEmptyMap("map")
	mp.PutDouble("d", 1.5)
	mp.PutEmptyMap("inner").PutBool("b", true)
	l := s.Links().AppendEmpty()
	l.SetFlags(3)
	l.TraceState().FromRaw("a=b")
	l.SetDroppedAttributesCount(1)
	e := s.Events().AppendEmpty()
	e.SetDroppedAttributesCount(4)
	s.Status().SetMessage("only a message")
	// A span with nothing set at all.
	td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().AppendEmpty()

	var sizer ptrace.ProtoMarshaler
	scratch := ptrace.NewTraces()
	spans := scratch.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	forAll := func(fn func(ptrace.Span)) {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			ss := td.ResourceSpans().At(i).ScopeSpans()
			for j := 0; j < ss.Len(); j++ {
				for k := 0; k < ss.At(j).Spans().Len(); k++ {
					fn(ss.At(j).Spans().At(k))
				}
			}
		}
	}
	n := 0
	forAll(func(span ptrace.Span) {
		n++
		span.CopyTo(spans.AppendEmpty())
		want := sizer.TracesSize(scratch)
		spans.RemoveIf(func(ptrace.Span) bool { return true })
		// ResourceSpans{resource: {}, scope_spans: [{scope: {}, spans: [span]}]}
		got := embedded(2 + embedded(2+embedded(SpanSize(span))))
		if got != want {
			t.Errorf("span %q: SpanSize %d gives %d, encoding %d", span.Name(), SpanSize(span), got, want)
		}
	})
	if n < 5 {
		t.Fatalf("only %d spans checked", n)
	}
}
