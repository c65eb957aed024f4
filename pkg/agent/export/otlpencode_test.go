package export

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// TestEncodeExportRequestDecodesAsBuilt checks the span queue's encoder
// against the OpenTelemetry Collector's own pdata: the bytes it writes
// decode (with pdata, as Vigil's and any OTLP receiver's decoder would) to
// exactly the traces built from the same spans with pdata's API, IDs aside.
func TestEncodeExportRequestDecodesAsBuilt(t *testing.T) {
	start := time.Unix(1700000000, 123456789)
	spans := []Span{
		{ServiceName: "api", ServiceInstanceID: "node-1:42", HostName: "node-1", Name: "GET /users/{id}", Kind: SpanKindServer,
			Start: start, End: start.Add(1500 * time.Microsecond),
			Attributes: []Attr{StrAttr("http.request.method", "GET"), IntAttr("http.response.status_code", 200), StrAttr("url.path", "/users/123"), IntAttr("server.port", 8080)}},
		{ServiceName: "web", ServiceInstanceID: "node-1:7", HostName: "node-1", Name: "SELECT", Kind: SpanKindClient,
			Start: start, End: start.Add(time.Second), Error: true, StatusMessage: "relation \"x\" does not exist",
			Attributes: []Attr{StrAttr("db.system.name", "postgresql"), StrAttr("error.type", "42P01"), IntAttr("negative", -3)}},
		{ServiceName: "api", ServiceInstanceID: "node-1:42", HostName: "node-1", Name: "GET /health", Kind: SpanKindServer,
			Start: start.Add(time.Hour), End: start.Add(time.Hour + time.Millisecond), Error: true,
			Attributes: []Attr{StrAttr("long", string(make([]byte, 300))), StrAttr("empty", "")}},
		{ServiceName: "dns", ServiceInstanceID: "node-2:1", Name: "", Kind: SpanKindClient, Start: start, End: start},
	}
	q := newSpanQueue()
	for i := range spans {
		q.add(&spans[i])
	}
	body, n := q.take(nil, 100)
	if n != len(spans) || q.spans != 0 || len(q.groups) != 0 {
		t.Fatalf("took %d of %d spans; %d left in %d groups", n, len(spans), q.spans, len(q.groups))
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		t.Fatalf("pdata cannot decode the encoded request: %v", err)
	}
	got := req.Traces()

	want := ptrace.NewTraces()
	byInstance := map[string]ptrace.SpanSlice{}
	for _, s := range spans {
		key := s.ServiceName + "\x00" + s.ServiceInstanceID
		ss, ok := byInstance[key]
		if !ok {
			rs := want.ResourceSpans().AppendEmpty()
			attrs := rs.Resource().Attributes()
			attrs.PutStr("service.name", s.ServiceName)
			attrs.PutStr("service.instance.id", s.ServiceInstanceID)
			if s.HostName != "" {
				attrs.PutStr("host.name", s.HostName)
			}
			attrs.PutStr("telemetry.sdk.name", "vigil-agent")
			scope := rs.ScopeSpans().AppendEmpty()
			scope.Scope().SetName("github.com/vigil-obs/vigil/pkg/agent")
			ss = scope.Spans()
			byInstance[key] = ss
		}
		sp := ss.AppendEmpty()
		sp.SetName(s.Name)
		sp.SetKind(ptrace.SpanKindClient)
		if s.Kind == SpanKindServer {
			sp.SetKind(ptrace.SpanKindServer)
		}
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.Start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(s.End))
		if s.Error {
			sp.Status().SetCode(ptrace.StatusCodeError)
			sp.Status().SetMessage(s.StatusMessage)
		}
		for _, a := range s.Attributes {
			if a.IsInt {
				sp.Attributes().PutInt(a.Key, a.Int)
			} else {
				sp.Attributes().PutStr(a.Key, a.Str)
			}
		}
	}

	// Every span has its own non-zero trace and span ID; then they are
	// cleared for the comparison.
	seen := map[pcommon.TraceID]bool{}
	for i := 0; i < got.ResourceSpans().Len(); i++ {
		ss := got.ResourceSpans().At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			sp := ss.At(j)
			if sp.TraceID().IsEmpty() || sp.SpanID().IsEmpty() || seen[sp.TraceID()] {
				t.Fatalf("span %q: trace ID %v span ID %v (empty or repeated)", sp.Name(), sp.TraceID(), sp.SpanID())
			}
			seen[sp.TraceID()] = true
			sp.SetTraceID(pcommon.TraceID{})
			sp.SetSpanID(pcommon.SpanID{})
		}
	}
	var m ptrace.JSONMarshaler
	gotJSON, err := m.MarshalTraces(got)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := m.MarshalTraces(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("decoded traces differ from pdata's\n got: %s\nwant: %s", gotJSON, wantJSON)
	}
	if got.SpanCount() != len(spans) || got.ResourceSpans().Len() != 3 {
		t.Fatalf("%d spans in %d resources, want %d in 3", got.SpanCount(), got.ResourceSpans().Len(), len(spans))
	}
}

// BenchmarkEncodeExportRequest is the agent's cost of queueing and encoding
// one batch of 1000 HTTP server spans for OTLP.
func BenchmarkEncodeExportRequest(b *testing.B) {
	start := time.Now()
	spans := make([]Span, 1000)
	for i := range spans {
		spans[i] = Span{ServiceName: "api", ServiceInstanceID: "node-1:42", HostName: "node-1", Name: "GET /items/{id}", Kind: SpanKindServer,
			Start: start, End: start.Add(time.Millisecond),
			Attributes: []Attr{StrAttr("network.peer.address", "127.0.0.1"), IntAttr("network.peer.port", 50312), StrAttr("http.request.method", "GET"),
				IntAttr("http.response.status_code", 200), StrAttr("url.path", "/items/123"), StrAttr("http.route", "/items/{id}"),
				StrAttr("server.address", "127.0.0.1"), IntAttr("server.port", 8080)}}
	}
	b.ReportAllocs()
	q := newSpanQueue()
	buf := make([]byte, 0, 320*len(spans))
	for b.Loop() {
		for i := range spans {
			q.add(&spans[i])
		}
		buf, _ = q.take(buf[:0], len(spans))
	}
	b.ReportMetric(float64(len(buf))/float64(len(spans)), "bytes/span")
}

// TestSpanQueueTakesBatchesInOrder checks that batches split groups at span
// boundaries, oldest group first, and lose or repeat no span.
func TestSpanQueueTakesBatchesInOrder(t *testing.T) {
	q := newSpanQueue()
	start := time.Unix(1700000000, 0)
	var want []string
	for i := 0; i < 25; i++ {
		svc := []string{"a", "b", "c"}[i%3]
		if i >= 20 {
			svc = "d" // a group that appears after the first batches were cut
		}
		name := fmt.Sprintf("%s-%d", svc, i)
		want = append(want, name)
		q.add(&Span{ServiceName: svc, ServiceInstanceID: "n:1", Name: name, Start: start, End: start,
			Attributes: []Attr{IntAttr("i", int64(i))}})
		if i == 19 {
			// Take one batch in the middle of adding.
			got := takeNames(t, &q, 4)
			if strings.Join(got, ",") != "a-0,a-3,a-6,a-9" {
				t.Fatalf("first batch %v", got)
			}
		}
	}
	var got []string
	got = append(got, "a-0", "a-3", "a-6", "a-9")
	for q.spans > 0 {
		b := takeNames(t, &q, 4)
		if len(b) == 0 || len(b) > 4 {
			t.Fatalf("batch of %d", len(b))
		}
		got = append(got, b...)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("spans taken %v, want %v", got, want)
	}
}

func takeNames(t *testing.T, q *spanQueue, max int) []string {
	t.Helper()
	body, n := q.take(nil, max)
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(body); err != nil {
		t.Fatal(err)
	}
	var names []string
	rss := req.Traces().ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		svc, _ := rss.At(i).Resource().Attributes().Get("service.name")
		ss := rss.At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < ss.Len(); j++ {
			if !strings.HasPrefix(ss.At(j).Name(), svc.Str()+"-") {
				t.Fatalf("span %q under service %q", ss.At(j).Name(), svc.Str())
			}
			names = append(names, ss.At(j).Name())
		}
	}
	if len(names) != n {
		t.Fatalf("take said %d spans, body has %d", n, len(names))
	}
	return names
}
