package tempo

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/apitest"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/encoding/protowire"
)

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func setup(t *testing.T) *httptest.Server {
	t.Helper()
	reader := apitest.New()
	reader.Add("anonymous", apitest.Sample(t0))
	api := New(reader, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	api.now = func() time.Time { return t0.Add(10 * time.Minute) }
	r := mux.NewRouter()
	api.RegisterHTTP(r, "/tempo")
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, u, accept string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func checkTrace(t *testing.T, td ptrace.Traces) {
	t.Helper()
	if td.SpanCount() != 3 {
		t.Fatalf("%d spans, want 3", td.SpanCount())
	}
	if got := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID(); got != apitest.TraceA() {
		t.Errorf("trace ID %s", got)
	}
}

func TestTraceByIDProtobuf(t *testing.T) {
	srv := setup(t)
	id := apitest.TraceA().String()

	// v1: the body is tempopb.Trace, i.e. OTLP TracesData bytes.
	code, ct, body := get(t, srv.URL+"/tempo/api/traces/"+id, "application/protobuf")
	if code != http.StatusOK || ct != ctProtobuf {
		t.Fatalf("v1: %d %s", code, ct)
	}
	td, err := translate.OTLPFromProto(body)
	if err != nil {
		t.Fatal(err)
	}
	checkTrace(t, td)

	// v2: TraceByIDResponse with the trace as field 1.
	code, ct, body = get(t, srv.URL+"/tempo/api/v2/traces/"+id, "application/protobuf")
	if code != http.StatusOK || ct != ctProtobuf {
		t.Fatalf("v2: %d %s", code, ct)
	}
	num, typ, n := protowire.ConsumeTag(body)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		t.Fatalf("v2 body does not start with field 1 bytes: %d %d %d", num, typ, n)
	}
	inner, m := protowire.ConsumeBytes(body[n:])
	if m < 0 || n+m != len(body) {
		t.Fatalf("v2 body: bad length")
	}
	td, err = translate.OTLPFromProto(inner)
	if err != nil {
		t.Fatal(err)
	}
	checkTrace(t, td)
}

func TestTraceByIDJSON(t *testing.T) {
	srv := setup(t)
	id := apitest.TraceA().String()
	code, ct, body := get(t, srv.URL+"/tempo/api/traces/"+id, "")
	if code != http.StatusOK || ct != "application/json" {
		t.Fatalf("v1: %d %s", code, ct)
	}
	var v1 map[string]json.RawMessage
	if err := json.Unmarshal(body, &v1); err != nil || v1["batches"] == nil {
		t.Fatalf("v1 JSON %s", body)
	}
	td, err := translate.OTLPFromJSON([]byte(`{"resourceSpans":` + string(v1["batches"]) + `}`))
	if err != nil {
		t.Fatal(err)
	}
	checkTrace(t, td)

	code, _, body = get(t, srv.URL+"/tempo/api/v2/traces/"+id, "application/json")
	var v2 map[string]json.RawMessage
	if err := json.Unmarshal(body, &v2); code != http.StatusOK || err != nil {
		t.Fatalf("v2: %d %s", code, body)
	}
	td, err = translate.OTLPFromJSON(v2["trace"])
	if err != nil {
		t.Fatal(err)
	}
	checkTrace(t, td)
}

func TestErrors(t *testing.T) {
	srv := setup(t)
	for _, tc := range []struct {
		path string
		code int
		msg  string
	}{
		{"/tempo/api/traces/00000000000000000000000000000abc", 404, "trace not found"},
		{"/tempo/api/v2/traces/00000000000000000000000000000abc", 404, "trace not found"},
		{"/tempo/api/traces/not-an-id", 400, "invalid trace ID"},
		{"/tempo/api/v2/traces/abc?start=yesterday", 400, "invalid start"},
		{"/tempo/api/search?tags=" + url.QueryEscape(`a="unterminated`), 400, "unterminated quote"},
		{"/tempo/api/search?minDuration=fast", 400, "invalid minDuration"},
		{"/tempo/api/search?limit=0", 400, "invalid limit"},
		{"/tempo/api/search?q=" + url.QueryEscape(`{ .x = 1 } | count() > 2`), 400, "single spanset"},
		{"/tempo/api/search?q=" + url.QueryEscape(`{ status = broken }`), 400, "status is one of error, ok, unset"},
		{"/tempo/api/search?q=" + url.QueryEscape(`{ rootName = "x" }`), 400, "rootName is not supported"},
		{"/tempo/api/search?minDuration=2s&maxDuration=1s", 400, "exceeds max duration"},
	} {
		code, _, body := get(t, srv.URL+tc.path, "")
		if code != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.msg)
		}
	}
	code, _, body := get(t, srv.URL+"/tempo/api/echo", "")
	if code != http.StatusOK || string(body) != "echo" {
		t.Errorf("echo: %d %q", code, body)
	}
}

func TestSearchAndTags(t *testing.T) {
	srv := setup(t)
	start := strconv.FormatInt(t0.Add(-time.Minute).Unix(), 10)
	end := strconv.FormatInt(t0.Add(5*time.Minute).Unix(), 10)
	search := func(q url.Values) []searchTrace {
		t.Helper()
		q.Set("start", start)
		q.Set("end", end)
		code, _, body := get(t, srv.URL+"/tempo/api/search?"+q.Encode(), "")
		var res struct {
			Traces []searchTrace `json:"traces"`
		}
		if err := json.Unmarshal(body, &res); err != nil || code != http.StatusOK {
			t.Fatalf("%v: %d %s", q, code, body)
		}
		return res.Traces
	}
	got := search(url.Values{"tags": {`service.name=frontend http.method="GET"`}})
	want := []searchTrace{{TraceID: apitest.TraceA().String(), RootServiceName: "frontend", RootTraceName: "GET /checkout", StartTimeUnixNano: strconv.FormatInt(t0.UnixNano(), 10), DurationMs: 120}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v want %+v", got, want)
	}
	if got := search(url.Values{"q": {`{ resource.service.name = "frontend" && span.http.method = "GET" && duration > 100ms }`}}); !reflect.DeepEqual(got, want) {
		t.Errorf("TraceQL: got %+v want %+v", got, want)
	}
	if got := search(url.Values{"q": {`{}`}}); len(got) != 2 {
		t.Errorf("{}: %+v", got)
	}
	if got := search(url.Values{"minDuration": {"100ms"}}); len(got) != 1 {
		t.Errorf("minDuration: %+v", got)
	}
	if got := search(url.Values{"tags": {"env=prod"}, "limit": {"5"}}); len(got) != 1 || got[0].TraceID != apitest.TraceB().String() {
		t.Errorf("env=prod: %+v", got)
	}
	for path, want := range map[string]string{
		"/tempo/api/search/tag/env/values":         `{"tagValues":["prod"]}`,
		"/tempo/api/v2/search/tag/span.env/values": `{"tagValues":[{"type":"string","value":"prod"}]}`,
	} {
		code, _, body := get(t, srv.URL+path, "")
		if code != http.StatusOK || string(body) != want {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	code, _, body := get(t, srv.URL+"/tempo/api/search/tags", "")
	if code != http.StatusOK || !strings.Contains(string(body), `"payment.method"`) {
		t.Errorf("tags: %d %s", code, body)
	}
	code, _, body = get(t, srv.URL+"/tempo/api/v2/search/tags", "")
	if code != http.StatusOK || !strings.Contains(string(body), `"scopes":[{"name":"span","tags":[`) {
		t.Errorf("v2 tags: %d %s", code, body)
	}
}

func FuzzParseLogfmtTags(f *testing.F) {
	for _, s := range []string{"", "a=b", `a="b c" d=e`, `a="`, "=x", "a", `k="v"x`, "  a=1   b=2  "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseLogfmtTags(s)
		if err != nil {
			return
		}
		for k := range m {
			if k == "" || strings.ContainsAny(k, " \"") {
				t.Fatalf("%q produced key %q", s, k)
			}
		}
	})
}

func TestParseTraceQL(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want tracestore.SearchRequest
		err  string
	}{
		{`{}`, tracestore.SearchRequest{}, ""},
		{`{ resource.service.name = "api" && name = "GET /x" && kind = server }`, tracestore.SearchRequest{Service: "api", Operation: "GET /x", SpanKind: "server"}, ""},
		{`{.http.status_code=500 && span.ok=true && resource.k8s.ns="a && b"}`, tracestore.SearchRequest{Attributes: map[string]string{"http.status_code": "500", "ok": "true", "k8s.ns": "a && b"}}, ""},
		{`{ duration >= 1s && duration < 2s }`, tracestore.SearchRequest{MinDuration: time.Second, MaxDuration: 2 * time.Second}, ""},
		{`{ resource.service.name = "api" && status = error }`, tracestore.SearchRequest{Service: "api", Attributes: map[string]string{"otel.status_code": "error"}}, ""},
		{`{ .a != "b" }`, tracestore.SearchRequest{}, "operator != is not supported"},
		{`{ .a = "b" } || { .c = "d" }`, tracestore.SearchRequest{}, "single spanset"},
		{`{ .a = "b" || .c = "d" }`, tracestore.SearchRequest{}, "joined by &&"},
		{`{ duration = fast }`, tracestore.SearchRequest{}, "invalid duration"},
		{`{ .a = "unterminated }`, tracestore.SearchRequest{}, "bad string literal"},
		{`{ .a }`, tracestore.SearchRequest{}, "want <field> <operator> <value>"},
		{`.a = "b"`, tracestore.SearchRequest{}, "single spanset"},
	} {
		var got tracestore.SearchRequest
		err := ParseTraceQL(tc.q, &got)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.q, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v %v, want %+v", tc.q, got, err, tc.want)
		}
	}
}

func FuzzParseTraceQL(f *testing.F) {
	for _, s := range []string{`{}`, `{ .a = "b" && duration > 1s }`, `{ resource.service.name = "x" }`, `{ name = "a\"b" }`, `{&&}`, `{ .a = }`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		var req tracestore.SearchRequest
		if err := ParseTraceQL(q, &req); err == nil {
			for k := range req.Attributes {
				if k == "" {
					t.Fatalf("%q produced an empty attribute key", q)
				}
			}
		}
	})
}
