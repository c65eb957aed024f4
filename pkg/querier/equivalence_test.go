package querier

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// fixtureHours is how much data the equivalence fixture spans.
const fixtureHours = 6

// equivalenceExprs are evaluated on Vigil and on plain Prometheus; results must be
// identical. empty marks expressions whose correct answer is empty, so a silently empty
// result elsewhere fails the test instead of passing vacuously.
var equivalenceExprs = []struct {
	expr  string
	empty bool
}{
	{expr: `http_requests_total`},
	{expr: `http_requests_total{job=~"a.*", code!="500"}`},
	{expr: `{__name__=~"cpu_usage|memory_bytes", job!="web"}`},
	{expr: `rate(http_requests_total[5m])`},
	{expr: `irate(http_requests_total[5m])`},
	{expr: `increase(http_requests_total[10m])`},
	{expr: `resets(http_requests_total[1h])`},
	{expr: `delta(cpu_usage[10m])`},
	{expr: `idelta(cpu_usage[5m])`},
	{expr: `deriv(memory_bytes[10m])`},
	{expr: `predict_linear(memory_bytes[30m], 3600)`},
	{expr: `changes(cpu_usage[30m])`},
	{expr: `sum(rate(http_requests_total[5m]))`},
	{expr: `sum by (job) (rate(http_requests_total[5m]))`},
	{expr: `sum without (instance) (rate(http_requests_total[5m]))`},
	{expr: `avg by (job) (cpu_usage)`},
	{expr: `min by (job) (cpu_usage)`},
	{expr: `max without (instance) (cpu_usage)`},
	{expr: `count by (code) (http_requests_total)`},
	{expr: `group by (job) (cpu_usage)`},
	{expr: `stddev(cpu_usage)`},
	{expr: `stdvar by (job) (cpu_usage)`},
	{expr: `quantile(0.5, cpu_usage)`},
	{expr: `count_values("value", round(cpu_usage * 10))`},
	{expr: `topk(3, rate(http_requests_total[5m]))`},
	{expr: `bottomk(2, cpu_usage)`},
	{expr: `sort(cpu_usage)`},
	{expr: `sort_desc(sum by (job) (rate(http_requests_total[5m])))`},
	{expr: `quantile_over_time(0.9, cpu_usage[30m])`},
	{expr: `avg_over_time(cpu_usage[15m])`},
	{expr: `sum_over_time(cpu_usage[15m])`},
	{expr: `min_over_time(cpu_usage[1h]) - max_over_time(cpu_usage[1h])`},
	{expr: `stddev_over_time(memory_bytes[20m])`},
	{expr: `count_over_time(sparse_metric[5m])`},
	{expr: `last_over_time(sparse_metric[10m])`},
	{expr: `present_over_time(sparse_metric[10m])`},
	{expr: `absent_over_time(sparse_metric{job="api"}[10m])`},
	{expr: `absent(nonexistent_metric)`},
	{expr: `absent(cpu_usage{job="api"})`, empty: true},
	{expr: `histogram_quantile(0.9, sum by (le, job) (rate(request_duration_seconds_bucket[5m])))`},
	{expr: `histogram_quantile(0.99, rate(request_duration_seconds_bucket[10m]))`},
	{expr: `sum by (job) (increase(request_duration_seconds_count[30m]))`},
	{expr: `rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])`},
	{expr: `histogram_quantile(0.9, sum by (job) (rate(request_duration_native[5m])))`},
	{expr: `histogram_quantile(0.5, request_duration_native)`},
	{expr: `rate(request_duration_native[5m])`},
	{expr: `histogram_count(rate(request_duration_native[5m]))`},
	{expr: `histogram_sum(request_duration_native)`},
	{expr: `histogram_avg(rate(request_duration_native[10m]))`},
	{expr: `histogram_fraction(0, 4, rate(request_duration_native[5m]))`},
	{expr: `histogram_quantile(0.5, queue_size_fh)`},
	{expr: `http_requests_total offset 30m`},
	{expr: `rate(http_requests_total[5m] offset 1h)`},
	{expr: `rate(http_requests_total[5m] offset -10m)`},
	{expr: fmt.Sprintf(`cpu_usage @ %d`, (t0+2*hourMs)/1000)},
	{expr: `sum(rate(http_requests_total[5m] @ end()))`},
	{expr: `cpu_usage @ start()`},
	{expr: `max_over_time(rate(http_requests_total[5m])[30m:1m])`},
	{expr: `avg_over_time(cpu_usage[1h:5m])`},
	{expr: `min_over_time(deriv(memory_bytes[10m])[20m:])`},
	{expr: `label_replace(cpu_usage, "host", "$1", "instance", "i(.*)")`},
	{expr: `label_join(cpu_usage, "id", "-", "job", "instance")`},
	{expr: `rate(http_requests_total{code="500"}[5m]) / on(job, instance, method) rate(http_requests_total{code="200"}[5m])`},
	{expr: `rate(http_requests_total[5m]) / ignoring(code) group_left sum without (code) (rate(http_requests_total[5m]))`},
	{expr: `sum without (code) (rate(http_requests_total[5m])) / ignoring(code) group_right rate(http_requests_total[5m])`},
	{expr: `cpu_usage * on(job) group_left(version) build_info`},
	{expr: `cpu_usage > 0.5`},
	{expr: `cpu_usage > bool 0.5`},
	{expr: `cpu_usage > on(job, instance) (memory_bytes / 2e9)`},
	{expr: `cpu_usage and on(job) build_info{job="api"}`},
	{expr: `cpu_usage or memory_bytes`},
	{expr: `cpu_usage unless on(job) build_info{job="api"}`},
	{expr: `clamp(cpu_usage, 0.2, 0.8)`},
	{expr: `clamp_min(cpu_usage, 0.3)`},
	{expr: `clamp_max(cpu_usage, 0.6)`},
	{expr: `round(cpu_usage, 0.1)`},
	{expr: `abs(delta(cpu_usage[5m]))`},
	{expr: `sgn(deriv(cpu_usage[5m]))`},
	{expr: `exp(cpu_usage) / ln(memory_bytes)`},
	{expr: `scalar(sum(cpu_usage)) * cpu_usage`},
	{expr: `time()`},
	{expr: `timestamp(cpu_usage)`},
	{expr: `hour(timestamp(cpu_usage))`},
	{expr: `vector(1) + 2`},
}

type placement struct {
	name string
	// headFrom/blocksTo are offsets from t0 in hours: the ingester head holds
	// [headFrom, end], the bucket holds 2h blocks over [0, blocksTo).
	headFrom, blocksTo int64
	// inProcess reads the ingester by direct call, as a -target=all process does, instead
	// of over gRPC.
	inProcess bool
}

var placements = []placement{
	{name: "head", headFrom: 0, blocksTo: 0},
	{name: "bucket", headFrom: fixtureHours + 1, blocksTo: fixtureHours + 1},
	// Blocks [0h,4h) and head [3h,end]: one hour present in both.
	{name: "straddle", headFrom: 3, blocksTo: 4},
	{name: "head-in-process", headFrom: 0, blocksTo: 0, inProcess: true},
	{name: "straddle-in-process", headFrom: 3, blocksTo: 4, inProcess: true},
}

func TestPromQLEquivalence(t *testing.T) {
	fixture := genFixture(fixtureHours)
	end := t0 + fixtureHours*hourMs

	cfg := testConfig()
	refDB := openHeadDB(t)
	appendSeries(t, refDB, fixture, t0, end+1)
	ref := promClient(t, startReference(t, cfg, refDB).URL, testTenant)

	for _, p := range placements {
		t.Run(p.name, func(t *testing.T) {
			var ingesters []string
			if p.headFrom <= fixtureHours {
				db := openHeadDB(t)
				appendSeries(t, db, fixture, t0+p.headFrom*hourMs, end+1)
				if p.inProcess {
					ingesters = append(ingesters, localIngester(t, db))
				} else {
					ingesters = append(ingesters, fakeIngester(t, db))
				}
			}
			bkt := newBucket(t)
			if p.blocksTo > 0 {
				writeBlocks(t, bkt, fixture, t0, min(t0+p.blocksTo*hourMs, end+1), 2*hourMs)
			}
			sg, sgAddr := startStoreGateway(t, bkt, 64<<20)
			if err := sg.SyncNow(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, srv := startQuerier(t, cfg, ingesters, []string{sgAddr})
			// Both URL forms Grafana may be configured with.
			clients := map[string]promv1.API{
				"root":       promClient(t, srv.URL, testTenant),
				"prometheus": promClient(t, srv.URL+"/prometheus", testTenant),
			}
			for i, e := range equivalenceExprs {
				c := clients["root"]
				if i%2 == 1 {
					c = clients["prometheus"]
				}
				compareQuery(t, ref, c, e.expr, e.empty, end)
			}
		})
	}
}

// compareQuery compares a range query over the whole fixture and instant queries at
// several points (inside a block, at a block boundary, in the overlap, at the end).
func compareQuery(t *testing.T, ref, vigil promv1.API, expr string, wantEmpty bool, end int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := promv1.Range{Start: time.UnixMilli(t0), End: time.UnixMilli(end), Step: 2 * time.Minute}
	want, _, wantErr := ref.QueryRange(ctx, expr, r)
	got, _, gotErr := vigil.QueryRange(ctx, expr, r)
	if (wantErr != nil) != (gotErr != nil) {
		t.Errorf("range %s: error mismatch: vigil %v, prometheus %v", expr, gotErr, wantErr)
		return
	}
	if wantErr != nil {
		t.Errorf("range %s: prometheus failed: %v", expr, wantErr)
		return
	}
	if want.String() != got.String() {
		t.Errorf("range %s: results differ\nvigil:      %s\nprometheus: %s", expr, truncate(got.String()), truncate(want.String()))
	}
	if (want.String() == "") != wantEmpty {
		t.Errorf("range %s: prometheus result empty=%v, fixture expects empty=%v", expr, want.String() == "", wantEmpty)
	}
	for _, at := range []int64{t0 + hourMs + 7*scrapeMs, t0 + 2*hourMs, t0 + 3*hourMs + 30*60_000, end} {
		want, _, wantErr := ref.Query(ctx, expr, time.UnixMilli(at))
		got, _, gotErr := vigil.Query(ctx, expr, time.UnixMilli(at))
		if (wantErr != nil) != (gotErr != nil) {
			t.Errorf("instant %s @%d: error mismatch: vigil %v, prometheus %v", expr, at, gotErr, wantErr)
			continue
		}
		if wantErr == nil && !strings.HasPrefix(expr, "sort") {
			// Plain Prometheus returns instant vectors in head (series creation) order, the
			// merged view in label order; neither is specified, so compare as sets unless
			// the expression sorts.
			sortVector(want)
			sortVector(got)
		}
		if wantErr == nil && want.String() != got.String() {
			t.Errorf("instant %s @%d: results differ\nvigil:      %s\nprometheus: %s", expr, at, truncate(got.String()), truncate(want.String()))
		}
	}
}

func sortVector(v model.Value) {
	if vec, ok := v.(model.Vector); ok {
		slices.SortFunc(vec, func(a, b *model.Sample) int { return strings.Compare(a.Metric.String(), b.Metric.String()) })
	}
}

func truncate(s string) string {
	const maxLen = 600
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + fmt.Sprintf("... (%d more bytes)", len(s)-maxLen)
}

func TestEquivalenceTableSize(t *testing.T) {
	if len(equivalenceExprs) < 60 {
		t.Fatalf("the issue asks for at least 60 expressions, have %d", len(equivalenceExprs))
	}
	seen := map[string]bool{}
	for _, e := range equivalenceExprs {
		if seen[e.expr] {
			t.Errorf("duplicate expression %s", e.expr)
		}
		seen[e.expr] = true
		if strings.TrimSpace(e.expr) == "" {
			t.Error("empty expression")
		}
	}
}
