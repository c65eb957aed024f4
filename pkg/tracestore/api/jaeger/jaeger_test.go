package jaeger

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/apitest"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func setup(t *testing.T, multiTenant bool) (*httptest.Server, *apitest.Reader) {
	t.Helper()
	reader := apitest.New()
	reader.Add("anonymous", apitest.Sample(t0))
	reader.Add("team-a", apitest.Sample(t0))
	api := New(reader, multiTenant, slog.New(slog.NewTextHandler(io.Discard, nil)))
	api.now = func() time.Time { return t0.Add(10 * time.Minute) }
	r := mux.NewRouter()
	api.RegisterHTTP(r, "/jaeger")
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv, reader
}

func get(t *testing.T, url string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
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
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	return resp.StatusCode, b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		var buf bytes.Buffer
		if err := json.Indent(&buf, got, "", "  "); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, got)
	}
	if !reflect.DeepEqual(w, g) {
		t.Fatalf("%s differs from golden\ngot: %s", name, got)
	}
}

func TestEnvelopeExactBytes(t *testing.T) {
	srv, _ := setup(t, false)
	for path, want := range map[string]string{
		"/jaeger/api/services":                                    `{"data":["frontend","payments"],"total":2,"limit":0,"offset":0,"errors":null}`,
		"/jaeger/api/services/payments/operations":                `{"data":["charge","reconcile"],"total":2,"limit":0,"offset":0,"errors":null}`,
		"/jaeger/api/operations?service=payments":                 `{"data":[{"name":"charge","spanKind":"server"},{"name":"reconcile","spanKind":"internal"}],"total":2,"limit":0,"offset":0,"errors":null}`,
		"/jaeger/api/operations?service=payments&spanKind=server": `{"data":[{"name":"charge","spanKind":"server"}],"total":1,"limit":0,"offset":0,"errors":null}`,
		"/jaeger/api/traces?service=nobody":                       `{"data":[],"total":0,"limit":0,"offset":0,"errors":null}`,
		"/jaeger/api/traces/00000000000000000000000000000abc":     `{"data":null,"total":0,"limit":0,"offset":0,"errors":[{"code":404,"msg":"trace not found"}]}`,
		"/jaeger/api/dependencies?endTs=1795316400000":            `{"data":[{"parent":"frontend","child":"payments","callCount":1}],"total":1,"limit":0,"offset":0,"errors":null}`,
	} {
		code, body := get(t, srv.URL+path)
		wantCode := http.StatusOK
		if strings.Contains(want, `"code":404`) {
			wantCode = http.StatusNotFound
		}
		if code != wantCode || string(body) != want {
			t.Errorf("%s\n got %d %s\nwant %d %s", path, code, body, wantCode, want)
		}
	}
}

// keySets collects, per JSON path (array indices dropped), the set of keys
// objects there have; two documents of the same shape agree on them.
func keySets(v any, path string, out map[string]map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if out[path] == nil {
			out[path] = map[string]bool{}
		}
		for k, c := range x {
			out[path][k] = true
			child := path + "." + k
			if path == ".processes" || path == ".attributes" {
				child = path + ".*" // keyed by ID, not by field name
			}
			keySets(c, child, out)
		}
	case []any:
		for _, c := range x {
			keySets(c, path+"[]", out)
		}
	}
}

func shapeOf(t *testing.T, b []byte) map[string]map[string]bool {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	keySets(v, "", out)
	return out
}

func TestTraceByIDGoldenAndFixtureShape(t *testing.T) {
	srv, _ := setup(t, false)
	code, body := get(t, srv.URL+"/jaeger/api/traces/"+apitest.TraceA().String())
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	golden(t, "trace_by_id.golden.json", body)

	var env struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Data) != 1 {
		t.Fatalf("envelope: %v %s", err, body)
	}
	fixture, err := os.ReadFile("../../translate/testdata/ui_01.json")
	if err != nil {
		t.Fatal(err)
	}
	want, got := shapeOf(t, fixture), shapeOf(t, env.Data[0])
	for _, path := range []string{"", ".spans[]", ".spans[].references[]", ".spans[].tags[]", ".spans[].logs[]", ".spans[].logs[].fields[]", ".processes.*"} {
		if !reflect.DeepEqual(want[path], got[path]) {
			t.Errorf("object at %q has keys %v, Jaeger's fixture has %v", path, keys(got[path]), keys(want[path]))
		}
	}
	// Milliseconds from Grafana work as well as microseconds.
	ms := t0.Add(-time.Minute).UnixMilli()
	code, _ = get(t, srv.URL+"/jaeger/api/traces/"+apitest.TraceA().String()+"?start="+itoa(ms)+"&end="+itoa(ms+600000))
	if code != http.StatusOK {
		t.Errorf("ms range: %d", code)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

type searchResult struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			SpanID string `json:"spanID"`
		} `json:"spans"`
	} `json:"data"`
	Total  int `json:"total"`
	Errors []struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		TraceID string `json:"traceID"`
	} `json:"errors"`
}

func search(t *testing.T, srv *httptest.Server, q url.Values) (int, searchResult) {
	t.Helper()
	code, body := get(t, srv.URL+"/jaeger/api/traces?"+q.Encode())
	var res searchResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return code, res
}

func TestSearch(t *testing.T) {
	srv, reader := setup(t, false)
	a, b := apitest.TraceA().String(), apitest.TraceB().String()
	start := itoa(t0.Add(-time.Minute).UnixMicro())
	end := itoa(t0.Add(5 * time.Minute).UnixMicro())
	for _, tc := range []struct {
		name string
		q    url.Values
		want []string
	}{
		{"by service, newest first", url.Values{"service": {"payments"}, "start": {start}, "end": {end}}, []string{b, a}},
		{"by operation", url.Values{"service": {"payments"}, "operation": {"charge"}, "start": {start}, "end": {end}}, []string{a}},
		{"tags json", url.Values{"service": {"frontend"}, "tags": {`{"http.status_code":"500"}`}, "start": {start}, "end": {end}}, []string{a}},
		{"tags json number", url.Values{"tags": {`{"http.status_code":500}`}, "start": {start}, "end": {end}}, []string{a}},
		{"legacy tag", url.Values{"tag": {"env:prod"}, "start": {start}, "end": {end}}, []string{b}},
		{"no service, attributes only", url.Values{"tags": {`{"payment.method":"card"}`}, "start": {start}, "end": {end}}, []string{a}},
		{"min duration", url.Values{"minDuration": {"100ms"}, "start": {start}, "end": {end}}, []string{a}},
		{"max duration", url.Values{"maxDuration": {"10ms"}, "start": {start}, "end": {end}}, []string{b}},
		{"time range excludes", url.Values{"start": {itoa(t0.Add(30 * time.Second).UnixMicro())}, "end": {end}}, []string{b}},
		{"limit", url.Values{"limit": {"1"}, "start": {start}, "end": {end}}, []string{b}},
		{"default window is the last hour", url.Values{}, []string{b, a}},
		{"nothing", url.Values{"service": {"frontend"}, "operation": {"nope"}}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, res := search(t, srv, tc.q)
			if code != http.StatusOK {
				t.Fatalf("status %d: %+v", code, res)
			}
			got := []string{}
			for _, d := range res.Data {
				got = append(got, d.TraceID)
			}
			if !reflect.DeepEqual(got, tc.want) || res.Total != len(tc.want) {
				t.Errorf("got %v (total %d), want %v", got, res.Total, tc.want)
			}
		})
	}
	// Parameters reach the reader as parsed values.
	search(t, srv, url.Values{"service": {"s"}, "minDuration": {"1.5s"}, "limit": {"7"}, "start": {start}, "end": {end}})
	if reader.LastSearch.MinDuration != 1500*time.Millisecond || reader.LastSearch.Limit != 7 || !reader.LastSearch.Start.Equal(t0.Add(-time.Minute)) {
		t.Errorf("parsed %+v", reader.LastSearch)
	}
	search(t, srv, url.Values{"service": {"s"}})
	if reader.LastSearch.Limit != defaultLimit {
		t.Errorf("default limit %d", reader.LastSearch.Limit)
	}
}

func TestMultiGet(t *testing.T) {
	srv, _ := setup(t, false)
	missing := "00000000000000000000000000000abc"
	code, res := search(t, srv, url.Values{"traceID": {apitest.TraceA().String(), missing, apitest.TraceB().String()}})
	if code != http.StatusOK || len(res.Data) != 2 || res.Data[0].TraceID != apitest.TraceA().String() {
		t.Fatalf("%d %+v", code, res)
	}
	if len(res.Errors) != 1 || res.Errors[0].Code != 404 || res.Errors[0].TraceID != missing || res.Errors[0].Msg != "trace not found" {
		t.Errorf("errors %+v", res.Errors)
	}
	if len(res.Data[0].Spans) != 3 {
		t.Errorf("trace A has %d spans", len(res.Data[0].Spans))
	}
}

func TestBadParameters(t *testing.T) {
	srv, _ := setup(t, false)
	for _, tc := range []struct {
		path, msg string
	}{
		{"/jaeger/api/traces?minDuration=abc", "cannot parse minDuration"},
		{"/jaeger/api/traces?maxDuration=-1s", "cannot parse maxDuration"},
		{"/jaeger/api/traces?minDuration=2s&maxDuration=1s", "exceeds max duration"},
		{"/jaeger/api/traces?tags=%7Bnot-json", "malformed 'tags' parameter"},
		{"/jaeger/api/traces?tags=%7B%22a%22:%7B%7D%7D", "malformed 'tags' parameter"},
		{"/jaeger/api/traces?tag=novalue", "malformed 'tag' parameter"},
		{"/jaeger/api/traces?limit=-3", "cannot parse limit"},
		{"/jaeger/api/traces?start=yesterday", "cannot parse start"},
		{"/jaeger/api/traces?start=1795316400000000&end=1795316300000000", "before start"},
		{"/jaeger/api/traces?traceID=xyz", "invalid trace ID"},
		{"/jaeger/api/traces/not-hex", "invalid trace ID"},
		{"/jaeger/api/traces/00000000000000000000000000000000", "invalid trace ID"},
		{"/jaeger/api/traces/123456789012345678901234567890123", "invalid trace ID"},
		{"/jaeger/api/traces/abc?start=x", "cannot parse start"},
		{"/jaeger/api/operations", "parameter 'service' is required"},
		{"/jaeger/api/operations?service=a&spanKind=sideways", "unsupported span kind"},
		{"/jaeger/api/dependencies?endTs=soon", "cannot parse endTs"},
		{"/jaeger/api/dependencies?lookback=-5", "cannot parse lookback"},
	} {
		code, body := get(t, srv.URL+tc.path)
		var res searchResult
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if code != http.StatusBadRequest || len(res.Errors) != 1 || res.Errors[0].Code != 400 || !strings.Contains(res.Errors[0].Msg, tc.msg) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.path, code, body, tc.msg)
		}
	}
}

func TestTenancy(t *testing.T) {
	srv, reader := setup(t, true)
	code, body := get(t, srv.URL+"/jaeger/api/services")
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "X-Scope-OrgID") {
		t.Errorf("no tenant: %d %s", code, body)
	}
	code, body = get(t, srv.URL+"/jaeger/api/services", "X-Scope-OrgID", "team-b")
	if code != http.StatusOK || string(body) != `{"data":[],"total":0,"limit":0,"offset":0,"errors":null}` {
		t.Errorf("other tenant sees data: %d %s", code, body)
	}
	code, _ = get(t, srv.URL+"/jaeger/api/traces/"+apitest.TraceA().String(), "X-Scope-OrgID", "team-b")
	if code != http.StatusNotFound {
		t.Errorf("team-b reads team-a's trace: %d", code)
	}
	code, _ = get(t, srv.URL+"/jaeger/api/traces/"+apitest.TraceA().String(), "X-Scope-OrgID", "team-a")
	if code != http.StatusOK {
		t.Errorf("team-a: %d", code)
	}
	_ = reader
}

func TestStoreErrorIs500(t *testing.T) {
	srv, reader := setup(t, false)
	reader.Err = io.ErrUnexpectedEOF
	code, body := get(t, srv.URL+"/jaeger/api/services")
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "unexpected EOF") {
		t.Errorf("%d %s", code, body)
	}
	reader.Err = tracestore.ErrInvalidRequest
	code, _ = get(t, srv.URL+"/jaeger/api/traces?service=x")
	if code != http.StatusBadRequest {
		t.Errorf("invalid request from store: %d", code)
	}
}

func FuzzParseTags(f *testing.F) {
	for _, seed := range []string{`{"a":"b"}`, `{"http.status_code":500,"error":true}`, `{}`, `[1,2]`, `{"a":{"b":1}}`, `x`, `{"a":null}`} {
		f.Add(seed, "k:v")
	}
	f.Add("", "noseparator")
	f.Add(`{"a":"b"}`, ":v")
	f.Fuzz(func(t *testing.T, tags, tag string) {
		q := url.Values{}
		if tags != "" {
			q.Set("tags", tags)
		}
		if tag != "" {
			q.Set("tag", tag)
		}
		m, err := ParseTags(q)
		if err != nil {
			if m != nil {
				t.Fatalf("error with a result: %v %v", err, m)
			}
			return
		}
		// A legacy tag that parsed is in the result under its key.
		if k, v, ok := strings.Cut(tag, ":"); ok && k != "" && m[k] != v {
			t.Fatalf("tag %q: got %q", tag, m[k])
		}
	})
}
