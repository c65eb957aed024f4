package tracestore

import (
	"bytes"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestRowRoundTripPreservesEverything(t *testing.T) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.21.0")
	rs.Resource().Attributes().PutStr("service.name", "svc")
	rs.Resource().SetDroppedAttributesCount(2)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("lib")
	ss.Scope().SetVersion("v1")
	ss.Scope().Attributes().PutInt("scope.attr", 7)
	sp := ss.Spans().AppendEmpty()
	sp.SetTraceID(pcommon.TraceID{1, 2, 3})
	sp.SetSpanID(pcommon.SpanID{4, 5})
	sp.SetParentSpanID(pcommon.SpanID{6})
	sp.SetName("op")
	sp.SetKind(ptrace.SpanKindProducer)
	sp.SetStartTimestamp(1_700_000_000_000_000_000)
	sp.SetEndTimestamp(1_700_000_000_500_000_000)
	sp.Status().SetCode(ptrace.StatusCodeError)
	sp.Status().SetMessage("bad")
	sp.TraceState().FromRaw("k=v")
	sp.SetFlags(1)
	sp.SetDroppedAttributesCount(3)
	sp.SetDroppedEventsCount(4)
	sp.SetDroppedLinksCount(5)
	a := sp.Attributes()
	a.PutStr("s", "x")
	a.PutInt("i", -42)
	a.PutDouble("d", 3.5)
	a.PutBool("b", true)
	a.PutEmptyBytes("by").FromRaw([]byte{0, 1, 2})
	sl := a.PutEmptySlice("sl")
	sl.AppendEmpty().SetStr("a")
	sl.AppendEmpty().SetInt(1)
	m := a.PutEmptyMap("m")
	m.PutStr("nested", "y")
	a.PutEmpty("empty")
	ev := sp.Events().AppendEmpty()
	ev.SetName("ev")
	ev.SetTimestamp(1_700_000_000_100_000_000)
	ev.Attributes().PutStr("e", "1")
	ev.SetDroppedAttributesCount(1)
	l := sp.Links().AppendEmpty()
	l.SetTraceID(pcommon.TraceID{9})
	l.SetSpanID(pcommon.SpanID{8})
	l.TraceState().FromRaw("a=b")
	l.Attributes().PutStr("l", "2")
	l.SetFlags(1)

	rows := tracesToRows(td)
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	if rows[0].Service != "svc" {
		t.Fatalf("service = %q", rows[0].Service)
	}
	back, err := rowsToTraces(rows)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	got, _ := (&ptrace.JSONMarshaler{}).MarshalTraces(back)
	if string(want) != string(got) {
		t.Fatalf("round trip differs:\nwant %s\ngot  %s", want, got)
	}
}

func TestDecoderRejectsCorruptInput(t *testing.T) {
	var e encoder
	m := pcommon.NewMap()
	m.PutStr("key", "value")
	m.PutEmptySlice("s").AppendEmpty().SetInt(3)
	e.putMap(m)
	for cut := 0; cut < len(e.buf); cut++ {
		d := decoder{buf: e.buf[:cut]}
		d.getMap(pcommon.NewMap())
		if d.err == nil {
			t.Fatalf("truncation at %d not detected", cut)
		}
	}
}

func TestParseTraceID(t *testing.T) {
	id, err := ParseTraceID("abc")
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "00000000000000000000000000000abc" {
		t.Fatalf("got %s", id)
	}
	for _, bad := range []string{"", "xyz", "0", "000000000000000000000000000000000"} {
		if _, err := ParseTraceID(bad); err == nil {
			t.Errorf("ParseTraceID(%q) succeeded", bad)
		}
	}
}

func TestMatchAttrBlobAgreesWithDecoding(t *testing.T) {
	m := pcommon.NewMap()
	m.PutStr("s", "x")
	m.PutInt("i", -42)
	m.PutDouble("d", 2.5)
	m.PutBool("b", true)
	m.PutEmptyBytes("by").FromRaw([]byte{1})
	m.PutEmptySlice("sl").AppendEmpty().SetStr("a")
	m.PutEmptyMap("m").PutInt("n", 1)
	m.PutEmpty("e")
	var e encoder
	e.putMap(m)
	m.Range(func(k string, v pcommon.Value) bool {
		for _, want := range []string{v.AsString(), "", "nope"} {
			found := map[string]bool{}
			matchAttrBlob(e.buf, map[string]string{k: want, "absent": ""}, found)
			if exp := want != "nope"; found[k] != exp || found["absent"] {
				t.Errorf("key %s want %q: found=%v, expected %v", k, want, found, exp)
			}
		}
		return true
	})
}

// TestSearchRowSetsKeepsNewestLimit compares the bounded head search with a
// full sort, including traces that start at the same instant.
func TestSearchRowSetsKeepsNewestLimit(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	td := genTraces(genOpts{traces: 200, spansPerTrace: 3, seed: 3, base: base})
	// Give every 4 consecutive traces the same start to exercise tie-breaking.
	rows := tracesToRows(td)
	byTrace := map[TraceID][]spanRow{}
	for _, r := range rows {
		byTrace[TraceID(r.TraceID)] = append(byTrace[TraceID(r.TraceID)], r)
	}
	i := 0
	for _, rs := range byTrace {
		shift := int64(i%4) * int64(time.Millisecond)
		for k := range rs {
			rs[k].StartUnixNano -= shift
		}
		i++
	}
	for _, limit := range []int{1, 7, 20, 500} {
		got := searchRowSets(byTrace, SearchRequest{Limit: limit})
		all := summarySet{}
		for _, rs := range byTrace {
			all.add(summarize(rs))
		}
		want := all.sorted(limit)
		if len(got) != len(want) {
			t.Fatalf("limit %d: got %d, want %d", limit, len(got), len(want))
		}
		for j := range want {
			if got[j].TraceID != want[j].TraceID {
				t.Fatalf("limit %d: position %d is %s, want %s", limit, j, got[j].TraceID, want[j].TraceID)
			}
		}
	}
}

// FuzzAttributeBlob feeds arbitrary bytes to every reader of the compact
// attribute encoding: corrupt blocks must produce errors, never panics or
// huge allocations.
func FuzzAttributeBlob(f *testing.F) {
	var e encoder
	m := pcommon.NewMap()
	m.PutStr("k", "v")
	m.PutInt("i", 7)
	m.PutEmptySlice("s").AppendEmpty().SetBool(true)
	m.PutEmptyMap("m").PutDouble("d", 1.5)
	e.putMap(m)
	f.Add(e.buf)
	f.Add([]byte{1, 1, 'k', tagSlice, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blob []byte) {
		d := decoder{buf: blob}
		out := pcommon.NewMap()
		d.getMap(out)
		if d.err == nil {
			// A blob that decodes re-encodes to a blob that decodes to the same map.
			var re encoder
			re.putMap(out)
			back := pcommon.NewMap()
			d2 := decoder{buf: re.buf}
			d2.getMap(back)
			var again encoder
			again.putMap(back)
			// Bytes, not values: NaN != NaN, but its bits survive.
			if d2.err != nil || !bytes.Equal(re.buf, again.buf) {
				t.Fatalf("re-encoding changed the map: %v vs %v (%v)", out.AsRaw(), back.AsRaw(), d2.err)
			}
		}
		matchAttrBlob(blob, map[string]string{"k": "v", "i": ""}, map[string]bool{})
		newAttrIndex().addBlob(blob)
		r := spanRow{Attrs: blob, Events: blob, Links: blob, Resource: blob, Scope: blob}
		_, _ = rowsToTraces([]spanRow{r})
	})
}
