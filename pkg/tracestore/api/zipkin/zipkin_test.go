package zipkin

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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/apitest"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files")

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func setup(t *testing.T, multiTenant bool, prefix string) (*httptest.Server, *apitest.Reader) {
	t.Helper()
	reader := apitest.New()
	reader.Add("anonymous", apitest.Sample(t0))
	api := New(reader, multiTenant, slog.New(slog.NewTextHandler(io.Discard, nil)))
	api.now = func() time.Time { return t0.Add(10 * time.Minute) }
	r := mux.NewRouter()
	api.RegisterHTTP(r, prefix)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv, reader
}

func get(t *testing.T, u string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
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
	return resp.StatusCode, b
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// spec is the part of zipkin2-api.yaml the tests use.
type spec struct {
	BasePath string `yaml:"basePath"`
	Paths    map[string]map[string]struct {
		Parameters []struct {
			Name     string `yaml:"name"`
			Required bool   `yaml:"required"`
		} `yaml:"parameters"`
	} `yaml:"paths"`
	Definitions map[string]struct {
		Properties map[string]any `yaml:"properties"`
	} `yaml:"definitions"`
}

func loadSpec(t *testing.T) spec {
	t.Helper()
	b, err := os.ReadFile("testdata/zipkin2-api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if shared, err := os.ReadFile("/work/shared/fixtures/zipkin/zipkin2-api.yaml"); err == nil && !bytes.Equal(shared, b) {
		t.Fatal("testdata/zipkin2-api.yaml differs from the shared fixture; copy it over")
	}
	var s spec
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Every GET endpoint of the specification answers on both mounts, with
// its required parameters filled in.
func TestEverySpecEndpointIsServed(t *testing.T) {
	s := loadSpec(t)
	values := map[string]string{
		"serviceName": "frontend", "traceIds": apitest.TraceA().String(), "endTs": ms(t0.Add(time.Minute)), "key": "env",
	}
	for _, prefix := range []string{"/zipkin", ""} {
		srv, _ := setup(t, false, prefix)
		n := 0
		for path, ops := range s.Paths {
			op, ok := ops["get"]
			if !ok {
				continue
			}
			n++
			q := url.Values{}
			for _, p := range op.Parameters {
				if p.Required && p.Name != "traceId" {
					q.Set(p.Name, values[p.Name])
				}
			}
			p := strings.ReplaceAll(path, "{traceId}", apitest.TraceA().String())
			u := srv.URL + prefix + s.BasePath + p + "?" + q.Encode()
			code, body := get(t, u)
			if code != http.StatusOK {
				t.Errorf("GET %s: %d %s", u, code, body)
			}
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Errorf("GET %s: not JSON: %s", u, body)
			}
		}
		if n < 8 {
			t.Fatalf("spec has only %d GET paths; parsing went wrong", n)
		}
	}
}

func TestTraceGoldenAndSpecShape(t *testing.T) {
	s := loadSpec(t)
	srv, _ := setup(t, false, "/zipkin")
	code, body := get(t, srv.URL+"/zipkin/api/v2/trace/"+apitest.TraceA().String())
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	path := filepath.Join("testdata", "trace.golden.json")
	if *update {
		var buf bytes.Buffer
		if err := json.Indent(&buf, body, "", "  "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var w, g []map[string]any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(w, g) {
		t.Errorf("trace differs from golden:\n%s", body)
	}
	props := s.Definitions["Span"].Properties
	for _, span := range g {
		for k := range span {
			if _, ok := props[k]; !ok {
				t.Errorf("span field %q is not in the Zipkin spec", k)
			}
		}
		for k, v := range span["tags"].(map[string]any) {
			if _, ok := v.(string); !ok {
				t.Errorf("tag %s is %T: Zipkin tags are strings", k, v)
			}
		}
	}
	// The child span points at its parent and carries the event as an annotation.
	var client map[string]any
	for _, span := range g {
		if span["id"] == "0000000000000002" {
			client = span
		}
	}
	if client["parentId"] != "0000000000000001" || client["kind"] != "CLIENT" || client["annotations"] == nil {
		t.Errorf("client span %v", client)
	}

	code, body = get(t, srv.URL+"/zipkin/api/v2/trace/00000000000000000000000000000abc")
	if code != http.StatusNotFound || !strings.Contains(string(body), "not found") {
		t.Errorf("missing: %d %s", code, body)
	}
}

func TestQueries(t *testing.T) {
	srv, reader := setup(t, false, "/zipkin")
	base := srv.URL + "/zipkin/api/v2"
	endTs := ms(t0.Add(5 * time.Minute))
	a, b := apitest.TraceA().String(), apitest.TraceB().String()
	// Zipkin writes a trace ID whose high 64 bits are zero in 16 digits.
	b16 := b[16:]
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/services", `["frontend","payments"]`},
		{"/spans?serviceName=payments", `["charge","reconcile"]`},
		{"/remoteServices?serviceName=frontend", `["payments"]`},
		{"/remoteServices?serviceName=payments", `[]`},
		{"/dependencies?endTs=" + endTs, `[{"parent":"frontend","child":"payments","callCount":1}]`},
		{"/autocompleteKeys", ``},
		{"/autocompleteValues?key=env", `["prod"]`},
		{"/traces?serviceName=nobody&endTs=" + endTs, `[]`},
		{"/traceMany?traceIds=00000000000000000000000000000abc", `[]`},
	} {
		code, body := get(t, base+tc.path)
		if code != http.StatusOK || (tc.want != "" && strings.TrimSpace(string(body)) != tc.want) {
			t.Errorf("%s: %d %s want %s", tc.path, code, body, tc.want)
		}
	}
	traceIDs := func(q string) []string {
		code, body := get(t, base+"/traces?"+q)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		var res [][]struct {
			TraceID string `json:"traceId"`
		}
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, tr := range res {
			out = append(out, tr[0].TraceID)
		}
		return out
	}
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"serviceName=payments&endTs=" + endTs, []string{b16, a}},
		{"serviceName=payments&spanName=charge&endTs=" + endTs, []string{a}},
		{"serviceName=payments&spanName=all&endTs=" + endTs, []string{b16, a}},
		{"annotationQuery=" + url.QueryEscape("payment.method=card and retried") + "&endTs=" + endTs, []string{a}},
		{"minDuration=100000&endTs=" + endTs, []string{a}},
		{"maxDuration=10000&endTs=" + endTs, []string{b16}},
		{"serviceName=frontend&remoteServiceName=payments&endTs=" + endTs, []string{a}},
		{"limit=1&endTs=" + endTs, []string{b16}},
		{"endTs=" + ms(t0.Add(30*time.Second)) + "&lookback=60000", []string{a}},
	} {
		if got := traceIDs(tc.q); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v want %v", tc.q, got, tc.want)
		}
	}
	if !reader.LastSearch.Start.Equal(t0.Add(-30 * time.Second)) {
		t.Errorf("lookback: start %v", reader.LastSearch.Start)
	}
	code, body := get(t, base+"/traceMany?traceIds="+a+","+b)
	var many [][]map[string]any
	if err := json.Unmarshal(body, &many); err != nil || code != http.StatusOK || len(many) != 2 || len(many[0]) != 3 {
		t.Errorf("traceMany: %d %s", code, body)
	}
}

func TestBadParameters(t *testing.T) {
	srv, _ := setup(t, true, "/zipkin")
	base := srv.URL + "/zipkin/api/v2"
	h := []string{"X-Scope-OrgID", "t1"}
	for _, tc := range []struct {
		path, msg string
		code      int
	}{
		{"/spans", "serviceName is missing", 400},
		{"/remoteServices", "serviceName is missing", 400},
		{"/dependencies", "endTs is missing", 400},
		{"/dependencies?endTs=x", "endTs must be epoch milliseconds", 400},
		{"/dependencies?endTs=1&lookback=-1", "lookback", 400},
		{"/autocompleteValues", "key is missing", 400},
		{"/traceMany", "traceIds is missing", 400},
		{"/traceMany?traceIds=abc,zz", "invalid trace ID", 400},
		{"/trace/xyz", "invalid trace ID", 400},
		{"/traces?minDuration=-5", "minDuration", 400},
		{"/traces?maxDuration=abc", "maxDuration", 400},
		{"/traces?minDuration=20&maxDuration=10", "exceeds max duration", 400},
		{"/traces?limit=0", "limit must be a positive integer", 400},
		{"/traces?endTs=tomorrow", "endTs", 400},
		{"/traces?lookback=x", "lookback", 400},
		{"/traces?annotationQuery=" + url.QueryEscape("a=1 and  and b"), "empty term", 400},
		{"/traces?annotationQuery=" + url.QueryEscape("=v"), "no key", 400},
	} {
		code, body := get(t, base+tc.path, h...)
		if code != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: %d %q, want %d with %q", tc.path, code, body, tc.code, tc.msg)
		}
	}
	code, body := get(t, base+"/services")
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "X-Scope-OrgID") {
		t.Errorf("no tenant: %d %s", code, body)
	}
	code, body = get(t, base+"/services", h...)
	if code != http.StatusOK || strings.TrimSpace(string(body)) != `[]` {
		t.Errorf("tenant t1 sees %d %s", code, body)
	}
}

func FuzzParseAnnotationQuery(f *testing.F) {
	for _, s := range []string{"", "error", "http.path=/api and error", "a=b=c", " and ", "=x", "k= and j"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseAnnotationQuery(s)
		if err != nil {
			return
		}
		for k := range m {
			if k == "" {
				t.Fatalf("%q produced an empty key", s)
			}
		}
	})
}
