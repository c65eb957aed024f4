package querier

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
)

// apiEnv is the production read path: a real ingester found through the ring holding
// [3h, end], bucket blocks over [0h, 4h) behind a store-gateway, and a reference Prometheus.
type apiEnv struct {
	vigilURL, refURL string
	end              int64
}

func newAPIEnv(t *testing.T, cfg Config, headFromHours, blocksToHours int64) *apiEnv {
	t.Helper()
	fixture := genFixture(fixtureHours)
	end := t0 + fixtureHours*hourMs

	refDB := openHeadDB(t)
	appendSeries(t, refDB, fixture, t0, end+1)
	ref := startReference(t, cfg, refDB)

	env := newRingEnv(t)
	ingAddr := startRealIngester(t, env.kv, "ingester-1")
	pushFixture(t, ingAddr, fixture, t0+headFromHours*hourMs, end+1)

	bkt := newBucket(t)
	if blocksToHours > 0 {
		writeBlocks(t, bkt, fixture, t0, min(t0+blocksToHours*hourMs, end+1), 2*hourMs)
	}
	sg, sgAddr := startStoreGateway(t, bkt, 64<<20)
	if err := sg.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := startQuerierOnRing(t, cfg, env, []string{sgAddr}, 1)
	r := newTestRouter(t, q)
	return &apiEnv{vigilURL: r.URL, refURL: ref.URL, end: end}
}

// TestPromQLEquivalence_RealIngester runs the equivalence table through the production
// path: pkg/ingester (found through the dskit ring) plus store-gateway blocks.
func TestPromQLEquivalence_RealIngester(t *testing.T) {
	for _, p := range []placement{
		{name: "ingester", headFrom: 0, blocksTo: 0},
		{name: "ingester+bucket", headFrom: 3, blocksTo: 4},
	} {
		t.Run(p.name, func(t *testing.T) {
			e := newAPIEnv(t, testConfig(), p.headFrom, p.blocksTo)
			ref := promClient(t, e.refURL, testTenant)
			vigil := promClient(t, e.vigilURL+"/prometheus", testTenant)
			for _, ex := range equivalenceExprs {
				compareQuery(t, ref, vigil, ex.expr, ex.empty, e.end)
			}
		})
	}
}

type apiBody struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func call(t *testing.T, method, u string, form url.Values, tenant string) (int, apiBody) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	} else if form != nil {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequestWithContext(context.Background(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if tenant != "" {
		req.Header.Set("X-Scope-OrgID", tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var b apiBody
	if resp.StatusCode != http.StatusNotFound {
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("%s %s: status %d, body %q is not API JSON: %v", method, u, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, b
}

// TestAPI_GrafanaDatasourceCalls replays what Grafana's Prometheus datasource sends, on both
// URL forms, and checks the answers match Prometheus' own byte for byte.
func TestAPI_GrafanaDatasourceCalls(t *testing.T) {
	e := newAPIEnv(t, testConfig(), 3, 4)
	start, end := fmt.Sprint(t0/1000), fmt.Sprint(e.end/1000)
	for _, prefix := range []string{"", "/prometheus"} {
		base := e.vigilURL + prefix + "/api/v1"
		t.Run("prefix="+prefix, func(t *testing.T) {
			code, b := call(t, http.MethodGet, base+"/status/buildinfo", nil, testTenant)
			if code != http.StatusOK || !strings.Contains(string(b.Data), `"version":"`+PrometheusCompatVersion+`"`) {
				t.Errorf("buildinfo: %d %s", code, b.Data)
			}
			for _, c := range []struct {
				method, path string
				form         url.Values
			}{
				{http.MethodGet, "/labels", url.Values{"start": {start}, "end": {end}}},
				{http.MethodPost, "/labels", url.Values{"start": {start}, "end": {end}, "match[]": {`cpu_usage`}}},
				{http.MethodGet, "/label/job/values", url.Values{"start": {start}, "end": {end}, "match[]": {`request_duration_native`}}},
				{http.MethodGet, "/label/__name__/values", url.Values{"start": {start}, "end": {end}}},
				{http.MethodPost, "/series", url.Values{"start": {start}, "end": {end}, "match[]": {`cpu_usage{job="api"}`, `build_info`}}},
				{http.MethodPost, "/query_range", url.Values{"query": {`sum by (job) (rate(http_requests_total[5m]))`}, "start": {start}, "end": {end}, "step": {"300"}}},
				{http.MethodPost, "/query", url.Values{"query": {`histogram_quantile(0.9, rate(request_duration_native[5m]))`}, "time": {end}}},
				{http.MethodGet, "/query", url.Values{"query": {`rate(request_duration_native[5m])`}, "time": {end}}},
				{http.MethodGet, "/format_query", url.Values{"query": {`sum(rate(foo[5m]))by(job)`}}},
			} {
				code, got := call(t, c.method, base+c.path, c.form, testTenant)
				wantCode, want := call(t, c.method, e.refURL+"/api/v1"+c.path, c.form, "")
				if code != wantCode || got.Status != want.Status || string(got.Data) != string(want.Data) {
					t.Errorf("%s %s: got %d %s %s, want %d %s %s", c.method, c.path, code, got.Status, truncate(string(got.Data)), wantCode, want.Status, truncate(string(want.Data)))
				}
				if code != http.StatusOK || len(got.Data) < 3 {
					t.Errorf("%s %s: unexpected empty or failed answer: %d %s", c.method, c.path, code, got.Data)
				}
			}

			// Metadata comes from the ingesters.
			code, b = call(t, http.MethodGet, base+"/metadata", nil, testTenant)
			var md map[string][]promv1.Metadata
			if err := json.Unmarshal(b.Data, &md); code != http.StatusOK || err != nil {
				t.Fatalf("metadata: %d %v %s", code, err, b.Data)
			}
			if m := md["http_requests_total"]; len(m) != 1 || m[0].Type != "counter" || m[0].Help != "Requests served." {
				t.Errorf("metadata of http_requests_total = %+v", m)
			}
			if m := md["cpu_usage"]; len(m) != 1 || m[0].Type != "gauge" || m[0].Unit != "ratio" {
				t.Errorf("metadata of cpu_usage = %+v", m)
			}
			_, b = call(t, http.MethodGet, base+"/metadata", url.Values{"metric": {"cpu_usage"}}, testTenant)
			md = nil
			if err := json.Unmarshal(b.Data, &md); err != nil || len(md) != 1 {
				t.Errorf("metadata?metric=cpu_usage = %s (%v)", b.Data, err)
			}

			// Exemplars come from the ingesters' exemplar storage.
			code, b = call(t, http.MethodGet, base+"/query_exemplars", url.Values{"query": {`http_requests_total{job="api"}`}, "start": {start}, "end": {end}}, testTenant)
			var ex []promv1.ExemplarQueryResult
			if err := json.Unmarshal(b.Data, &ex); code != http.StatusOK || err != nil {
				t.Fatalf("query_exemplars: %d %v %s", code, err, b.Data)
			}
			if len(ex) != 1 || len(ex[0].Exemplars) == 0 || string(ex[0].SeriesLabels["instance"]) != "i0" {
				t.Errorf("query_exemplars = %s", truncate(string(b.Data)))
			} else if !slices.IsSortedFunc(ex[0].Exemplars, func(a, b promv1.Exemplar) int { return a.Timestamp.Time().Compare(b.Timestamp.Time()) }) {
				t.Errorf("exemplars not sorted by time")
			}

			// Routes Vigil does not serve stay free (distributor owns write, ruler owns rules).
			for _, p := range []string{"/targets", "/write", "/status/tsdb", "/admin/tsdb/snapshot"} {
				if code, _ := call(t, http.MethodGet, base+p, nil, testTenant); code != http.StatusNotFound {
					t.Errorf("%s: status %d, want 404", p, code)
				}
			}
		})
	}
}

func TestAPI_TenantIsolation(t *testing.T) {
	e := newAPIEnv(t, testConfig(), 3, 4)
	other := promClient(t, e.vigilURL, "someone-else")
	ctx := context.Background()
	v, _, err := other.Query(ctx, `count({__name__=~".+"})`, time.UnixMilli(e.end))
	if err != nil {
		t.Fatal(err)
	}
	if v.String() != "" {
		t.Fatalf("another tenant sees data: %s", v)
	}
	names, _, err := other.LabelNames(ctx, nil, time.UnixMilli(t0), time.UnixMilli(e.end))
	if err != nil || len(names) != 0 {
		t.Fatalf("another tenant sees label names %v (%v)", names, err)
	}
	mine := promClient(t, e.vigilURL, testTenant)
	v, _, err = mine.Query(ctx, `count(cpu_usage)`, time.UnixMilli(e.end))
	if err != nil || !strings.Contains(v.String(), "=> 6 @") {
		t.Fatalf("own tenant: %v %v", v, err)
	}
}

// TestAPI_LimitsAndErrors checks limits and bad input fail the way Prometheus fails.
func TestAPI_LimitsAndErrors(t *testing.T) {
	end := fmt.Sprint((t0 + hourMs) / 1000)
	for _, c := range []struct {
		name      string
		cfg       func(*Config)
		query     string
		wantCode  int
		wantType  string
		wantError string
	}{
		{name: "bad query", query: `sum(`, wantCode: http.StatusBadRequest, wantType: "bad_data", wantError: "parse error"},
		{name: "max fetched series", cfg: func(c *Config) { c.MaxFetchedSeriesPerQuery = 5 }, query: `count(http_requests_total)`, wantCode: http.StatusUnprocessableEntity, wantType: "execution", wantError: "maximum number of series fetched (limit: 5 series)"},
		{name: "max samples", cfg: func(c *Config) { c.MaxSamples = 100 }, query: `sum(rate(http_requests_total[1h]))`, wantCode: http.StatusUnprocessableEntity, wantType: "execution", wantError: "too many samples"},
		{name: "timeout", cfg: func(c *Config) { c.Timeout = time.Nanosecond }, query: `count(http_requests_total)`, wantCode: http.StatusServiceUnavailable, wantType: "timeout", wantError: "timed out"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			fixture := genFixture(1)
			db := openHeadDB(t)
			appendSeries(t, db, fixture, t0, t0+hourMs+1)
			_, sgAddr := startStoreGateway(t, newBucket(t), 0)
			_, srv := startQuerier(t, cfg, []string{fakeIngester(t, db)}, []string{sgAddr})
			code, b := call(t, http.MethodPost, srv.URL+"/api/v1/query", url.Values{"query": {c.query}, "time": {end}}, testTenant)
			if code != c.wantCode || b.Status != "error" || b.ErrorType != c.wantType || !strings.Contains(b.Error, c.wantError) {
				t.Errorf("got %d %s/%s %q, want %d error/%s containing %q", code, b.Status, b.ErrorType, b.Error, c.wantCode, c.wantType, c.wantError)
			}
		})
	}
}
