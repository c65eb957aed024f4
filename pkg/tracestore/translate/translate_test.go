package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const fixtureDir = "/work/shared/fixtures/jaeger"

// readFixture loads a shared golden file; the shared fixtures live outside
// the repository, so a copy is kept in testdata for CI and the two are
// checked to agree when the shared one is present.
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	local := filepath.Join("testdata", name)
	b, err := os.ReadFile(local)
	if err != nil {
		t.Fatalf("read %s: %v", local, err)
	}
	if shared, err := os.ReadFile(filepath.Join(fixtureDir, name)); err == nil && !bytes.Equal(shared, b) {
		t.Fatalf("testdata/%s differs from %s/%s; copy it over", name, fixtureDir, name)
	}
	return b
}

func jsonEqual(t *testing.T, want, got []byte) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want is not JSON: %v", err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got is not JSON: %v\n%s", err, got)
	}
	if !reflect.DeepEqual(w, g) {
		t.Fatalf("JSON differs\nwant: %s\ngot:  %s", want, got)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		var buf bytes.Buffer
		if err := json.Indent(&buf, got, "", "  "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s (run with -update to create): %v", path, err)
	}
	jsonEqual(t, want, got)
}

// The UI model structs must reproduce Jaeger's own JSON byte for byte in
// shape: field names, null vs [] and int64-as-string.
func TestJaegerUIModelMatchesFixture(t *testing.T) {
	raw := readFixture(t, "ui_01.json")
	var tr JaegerTrace
	if err := json.Unmarshal(raw, &tr); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, raw, out)
}

// The fixture trace through OTLP and back: everything survives except what
// the upstream translators define differently, which the golden file pins:
// error=true becomes status ERROR and comes back with otel.status_code, and
// a FOLLOWS_FROM link to the parent overrides the parent's CHILD_OF type.
func TestJaegerFixtureRoundTripThroughOTLP(t *testing.T) {
	var tr JaegerTrace
	if err := json.Unmarshal(readFixture(t, "ui_01.json"), &tr); err != nil {
		t.Fatal(err)
	}
	td, err := JaegerTraceToOTLP(tr)
	if err != nil {
		t.Fatal(err)
	}
	if got := td.SpanCount(); got != len(tr.Spans) {
		t.Fatalf("span count: got %d want %d", got, len(tr.Spans))
	}
	traces := JaegerTracesFromOTLP(td)
	if len(traces) != 1 {
		t.Fatalf("want 1 trace, got %d", len(traces))
	}
	back := traces[0]
	for i, s := range back.Spans {
		o := tr.Spans[i]
		if s.SpanID != o.SpanID || s.OperationName != o.OperationName || s.StartTime != o.StartTime || s.Duration != o.Duration {
			t.Errorf("span %d: got %s/%s/%d/%d want %s/%s/%d/%d", i, s.SpanID, s.OperationName, s.StartTime, s.Duration, o.SpanID, o.OperationName, o.StartTime, o.Duration)
		}
		if back.Processes[s.ProcessID].ServiceName != tr.Processes[o.ProcessID].ServiceName {
			t.Errorf("span %d: service %q want %q", i, back.Processes[s.ProcessID].ServiceName, tr.Processes[o.ProcessID].ServiceName)
		}
	}
	// Every original tag of the typed-tags span is there with its type and value.
	orig := map[string]JaegerKeyValue{}
	for _, kv := range tr.Spans[1].Tags {
		orig[kv.Key] = kv
	}
	got := map[string]JaegerKeyValue{}
	for _, kv := range back.Spans[1].Tags {
		got[kv.Key] = kv
	}
	for k, v := range orig {
		gb, _ := json.Marshal(got[k])
		wb, _ := json.Marshal(v)
		if !bytes.Equal(gb, wb) {
			t.Errorf("tag %s: got %#v want %#v", k, got[k], v)
		}
	}
	if got["otel.status_code"].Value != "ERROR" {
		t.Errorf("otel.status_code: got %#v", got["otel.status_code"])
	}
	out, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "ui_01_roundtrip.golden.json", out)
}

func TestParseIDs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"1", "00000000000000000000000000000001", false},
		{"00000000000000ff", "000000000000000000000000000000ff", false},
		{"4bf92f3577b34da6a3ce929d0e0e4736", "4bf92f3577b34da6a3ce929d0e0e4736", false},
		{"", "", true},
		{"xyz", "", true},
		{"4bf92f3577b34da6a3ce929d0e0e47360", "", true},
	} {
		id, err := ParseTraceID(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseTraceID(%q) err=%v", tc.in, err)
			continue
		}
		if err == nil && id.String() != tc.want {
			t.Errorf("ParseTraceID(%q)=%s want %s", tc.in, id, tc.want)
		}
	}
	if _, err := ParseSpanID("00f067aa0ba902b7"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "zz", "00f067aa0ba902b700"} {
		if _, err := ParseSpanID(bad); err == nil {
			t.Errorf("ParseSpanID(%q) accepted", bad)
		}
	}
}

var (
	tid    = pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	rootID = pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 1}
	cliID  = pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 2}
	srvID  = pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 3}
	t0     = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
)

// richTrace is a two-service trace exercising every field a translator must
// carry: kinds, status, attributes of every OTLP type, events, links and
// resource attributes.
func richTrace() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "frontend")
	rs.Resource().Attributes().PutStr("host.name", "web-1")
	rs.Resource().Attributes().PutInt("process.pid", 4242)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("vigil-test")
	ss.Scope().SetVersion("1.0")

	root := ss.Spans().AppendEmpty()
	root.SetTraceID(tid)
	root.SetSpanID(rootID)
	root.SetName("GET /checkout")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(t0))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(120 * time.Millisecond)))
	a := root.Attributes()
	a.PutStr("http.method", "GET")
	a.PutInt("http.status_code", 500)
	a.PutBool("cache.hit", false)
	a.PutDouble("load", 0.75)
	a.PutInt("big", 9007199254740993)
	a.PutEmptyBytes("blob").FromRaw([]byte{0, 0, 0x30, 0x39})
	root.Status().SetCode(ptrace.StatusCodeError)
	root.Status().SetMessage("upstream failed")
	ev := root.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(pcommon.NewTimestampFromTime(t0.Add(100 * time.Millisecond)))
	ev.Attributes().PutStr("exception.message", "boom")

	cli := ss.Spans().AppendEmpty()
	cli.SetTraceID(tid)
	cli.SetSpanID(cliID)
	cli.SetParentSpanID(rootID)
	cli.SetName("POST /pay")
	cli.SetKind(ptrace.SpanKindClient)
	cli.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(10 * time.Millisecond)))
	cli.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(90 * time.Millisecond)))
	cli.Status().SetCode(ptrace.StatusCodeOk)
	link := cli.Links().AppendEmpty()
	link.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	link.SetSpanID(pcommon.SpanID{9, 9, 9, 9, 9, 9, 9, 9})

	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("service.name", "payments")
	srv := rs2.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	srv.SetTraceID(tid)
	srv.SetSpanID(srvID)
	srv.SetParentSpanID(cliID)
	srv.SetName("pay")
	srv.SetKind(ptrace.SpanKindServer)
	srv.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(20 * time.Millisecond)))
	srv.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(80 * time.Millisecond)))
	srv.Attributes().PutStr("payment.method", "card")
	return td
}

type flatSpan struct {
	service, name, parent string
	kind                  ptrace.SpanKind
	status                ptrace.StatusCode
	start, end            pcommon.Timestamp
	attrs                 map[string]any
	events                []string
	links                 []string
}

func flatten(td ptrace.Traces) map[string]flatSpan {
	out := map[string]flatSpan{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		svc, _ := rs.Resource().Attributes().Get("service.name")
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			spans := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				s := spans.At(k)
				f := flatSpan{service: svc.Str(), name: s.Name(), parent: s.ParentSpanID().String(), kind: s.Kind(), status: s.Status().Code(), start: s.StartTimestamp(), end: s.EndTimestamp(), attrs: s.Attributes().AsRaw()}
				for e := 0; e < s.Events().Len(); e++ {
					f.events = append(f.events, s.Events().At(e).Name())
				}
				for l := 0; l < s.Links().Len(); l++ {
					f.links = append(f.links, s.Links().At(l).TraceID().String()+"/"+s.Links().At(l).SpanID().String())
				}
				out[s.TraceID().String()+"/"+s.SpanID().String()] = f
			}
		}
	}
	return out
}

func resourceAttrs(td ptrace.Traces) map[string]map[string]any {
	out := map[string]map[string]any{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		attrs := td.ResourceSpans().At(i).Resource().Attributes().AsRaw()
		out[attrs["service.name"].(string)] = attrs
	}
	return out
}

func checkTree(t *testing.T, name string, want, got map[string]flatSpan) {
	t.Helper()
	checkTreeNames(t, name, want, got, func(s string) string { return s })
}

// checkTreeNames compares span trees after normalising names: Zipkin
// lower-cases span names by specification.
func checkTreeNames(t *testing.T, name string, want, got map[string]flatSpan, norm func(string) string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d spans, want %d", name, len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Errorf("%s: span %s missing", name, id)
			continue
		}
		if g.service != w.service || norm(g.name) != norm(w.name) || g.parent != w.parent || g.kind != w.kind || g.status != w.status || g.start != w.start || g.end != w.end {
			t.Errorf("%s: span %s\n got %+v\nwant %+v", name, id, g, w)
		}
		if !reflect.DeepEqual(g.events, w.events) {
			t.Errorf("%s: span %s events %v want %v", name, id, g.events, w.events)
		}
		if !reflect.DeepEqual(g.links, w.links) {
			t.Errorf("%s: span %s links %v want %v", name, id, g.links, w.links)
		}
	}
}

func TestFidelityOTLPJSON(t *testing.T) {
	td := richTrace()
	b, err := OTLPJSON(td)
	if err != nil {
		t.Fatal(err)
	}
	back, err := OTLPFromJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	want, got := flatten(td), flatten(back)
	checkTree(t, "otlp-json", want, got)
	for id := range want {
		if !reflect.DeepEqual(want[id].attrs, got[id].attrs) {
			t.Errorf("span %s attrs %v want %v", id, got[id].attrs, want[id].attrs)
		}
	}
	if !reflect.DeepEqual(resourceAttrs(td), resourceAttrs(back)) {
		t.Errorf("resource attrs %v want %v", resourceAttrs(back), resourceAttrs(td))
	}
	pb, err := OTLPProto(td)
	if err != nil {
		t.Fatal(err)
	}
	back2, err := OTLPFromProto(pb)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, "otlp-proto", want, flatten(back2))
}

func TestFidelityJaeger(t *testing.T) {
	td := richTrace()
	traces := JaegerTracesFromOTLP(td)
	if len(traces) != 1 {
		t.Fatalf("want 1 trace, got %d", len(traces))
	}
	jt := traces[0]
	// Through JSON, as a client would see it.
	b, err := json.Marshal(jt)
	if err != nil {
		t.Fatal(err)
	}
	var decoded JaegerTrace
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	back, err := JaegerTraceToOTLP(decoded)
	if err != nil {
		t.Fatal(err)
	}
	want, got := flatten(td), flatten(back)
	checkTree(t, "jaeger", want, got)
	for id, w := range want {
		for k, v := range w.attrs {
			if !reflect.DeepEqual(got[id].attrs[k], v) {
				t.Errorf("span %s attr %s: got %#v want %#v", id, k, got[id].attrs[k], v)
			}
		}
	}
	ra := resourceAttrs(back)
	if ra["frontend"]["host.name"] != "web-1" || ra["frontend"]["process.pid"] != int64(4242) {
		t.Errorf("resource attrs lost: %v", ra)
	}
	// Shape details jaeger-ui depends on.
	var root JaegerSpan
	for _, s := range jt.Spans {
		if s.SpanID == rootID.String() {
			root = s
		}
	}
	tags := map[string]JaegerKeyValue{}
	for _, kv := range root.Tags {
		tags[kv.Key] = kv
	}
	for k, want := range map[string]JaegerKeyValue{
		"error":                   {Key: "error", Type: "bool", Value: true},
		"otel.status_code":        {Key: "otel.status_code", Type: "string", Value: "ERROR"},
		"span.kind":               {Key: "span.kind", Type: "string", Value: "server"},
		"big":                     {Key: "big", Type: "int64", Value: "9007199254740993"},
		"http.status_code":        {Key: "http.status_code", Type: "int64", Value: int64(500)},
		"otel.scope.name":         {Key: "otel.scope.name", Type: "string", Value: "vigil-test"},
		"otel.status_description": {Key: "otel.status_description", Type: "string", Value: "upstream failed"},
	} {
		if !reflect.DeepEqual(tags[k], want) {
			t.Errorf("tag %s: got %#v want %#v", k, tags[k], want)
		}
	}
	if len(root.Logs) != 1 || root.Logs[0].Fields[0].Value != "exception" {
		t.Errorf("event → log: %#v", root.Logs)
	}
	for _, s := range jt.Spans {
		if s.SpanID == cliID.String() {
			if len(s.References) != 2 || s.References[0].RefType != "CHILD_OF" || s.References[1].RefType != "FOLLOWS_FROM" {
				t.Errorf("client refs: %#v", s.References)
			}
		}
	}
	if len(jt.Processes) != 2 {
		t.Errorf("processes: %#v", jt.Processes)
	}
}

func TestFidelityZipkin(t *testing.T) {
	td := richTrace()
	b, err := ZipkinJSONFromOTLP(td)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ZipkinJSONToOTLP(b)
	if err != nil {
		t.Fatal(err)
	}
	want, got := flatten(td), flatten(back)
	checkTreeNames(t, "zipkin", want, got, strings.ToLower)
	// Zipkin tags are strings: typed attributes come back as their string
	// form, bytes as base64, and the upstream translator maps the old HTTP
	// semantic convention name to the current one.
	g := got[tid.String()+"/"+rootID.String()].attrs
	for k, v := range map[string]any{"http.method": "GET", "http.response.status_code": "500", "cache.hit": "false", "load": "0.75", "big": "9007199254740993", "blob": "AAAwOQ=="} {
		if g[k] != v {
			t.Errorf("zipkin attr %s: got %#v want %#v", k, g[k], v)
		}
	}
	ra := resourceAttrs(back)
	if ra["frontend"]["host.name"] != "web-1" {
		t.Errorf("resource attrs lost: %v", ra)
	}
	var spans []map[string]any
	if err := json.Unmarshal(b, &spans); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, s := range spans {
		for k := range s {
			keys[k] = true
		}
	}
	var ks []string
	for k := range keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		switch k {
		case "traceId", "id", "parentId", "name", "kind", "timestamp", "duration", "localEndpoint", "remoteEndpoint", "annotations", "tags", "debug", "shared":
		default:
			t.Errorf("zipkin span has non-spec field %q", k)
		}
	}
}

// Responses must not depend on the order the store returned spans in.
func TestSortSpansIsOrderIndependent(t *testing.T) {
	td := richTrace()
	a := JaegerTracesFromOTLP(td)[0]
	SortSpans(&a)
	// Reverse the resources: a different store order of the same spans.
	rev := ptrace.NewTraces()
	for i := td.ResourceSpans().Len() - 1; i >= 0; i-- {
		td.ResourceSpans().At(i).CopyTo(rev.ResourceSpans().AppendEmpty())
	}
	b := JaegerTracesFromOTLP(rev)[0]
	if b.Spans[0].ProcessID == a.Spans[0].ProcessID && b.Processes["p1"].ServiceName == a.Processes["p1"].ServiceName {
		t.Fatal("test is vacuous: the reversed input already numbers processes the same way")
	}
	SortSpans(&b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Errorf("order-dependent output\n%s\n%s", ja, jb)
	}
}
