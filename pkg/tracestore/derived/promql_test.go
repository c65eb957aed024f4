package derived

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/teststorage"
)

// load appends pushed write requests into a real Prometheus TSDB, as the
// metrics write path would.
func load(t *testing.T, st *teststorage.TestStorage, reqs []*prompb.WriteRequest) {
	t.Helper()
	app := st.Appender(context.Background())
	for _, req := range reqs {
		for _, ts := range req.Timeseries {
			b := labels.NewScratchBuilder(len(ts.Labels))
			for _, l := range ts.Labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			lbls := b.Labels()
			for _, s := range ts.Samples {
				if _, err := app.Append(0, lbls, s.Timestamp, s.Value); err != nil {
					t.Fatalf("append %s @%d: %v", lbls, s.Timestamp, err)
				}
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
}

// The three-service trace, ingested twice 15s apart, is visible through
// the queries Grafana's service graph and RED panels run.
func TestDerivedMetricsQueryableWithPromQL(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	ctx := context.Background()
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now.Add(-time.Second)))
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(15 * time.Second)
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now.Add(-time.Second)))
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := teststorage.New(t)
	t.Cleanup(func() { _ = st.Close() })
	load(t, st, p.reqs["t1"])

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	query := func(q string) promql.Vector {
		t.Helper()
		qry, err := engine.NewInstantQuery(ctx, st, nil, q, now)
		if err != nil {
			t.Fatal(err)
		}
		defer qry.Close()
		res := qry.Exec(ctx)
		if res.Err != nil {
			t.Fatalf("%s: %v", q, res.Err)
		}
		v, err := res.Vector()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Node graph edges: every pair, each with two calls so far. The zero
	// sample written with each new series makes increase() count the
	// first call too (without it, it would report 1 per edge).
	edges := map[string]float64{}
	for _, s := range query(`sum by (client, server) (increase(traces_service_graph_request_total[1m]))`) {
		edges[s.Metric.Get("client")+"→"+s.Metric.Get("server")] = s.F
	}
	// The database call of the first trace has waited past the pairing
	// window and became an edge to the virtual "orders" node; the second
	// one is still waiting.
	want := map[string]float64{"backend→orders": 1, "backend→storage": 2, "frontend→backend": 2, "user→frontend": 2}
	if len(edges) != len(want) {
		t.Errorf("edges %v, want %v", edges, want)
	}
	for e, w := range want {
		if v, ok := edges[e]; !ok || math.Abs(v-w) > 0.5 {
			t.Errorf("increase of %s = %v, want about %v", e, v, w)
		}
	}
	if v := query(`sum(traces_service_graph_request_failed_total{client="backend", server="storage"})`); len(v) != 1 || v[0].F != 2 {
		t.Errorf("failed requests %v", v)
	}
	// RED panel: p50 latency of frontend's server spans lies in its bucket.
	v := query(`histogram_quantile(0.5, sum by (le) (rate(traces_spanmetrics_latency_bucket{service="frontend", span_kind="SPAN_KIND_SERVER"}[1m])))`)
	if len(v) != 1 || math.IsNaN(v[0].F) || v[0].F < 0.256 || v[0].F > 0.512 {
		t.Errorf("p50 latency %v, want within (0.256, 0.512]", v)
	}
	if v := query(`sum(rate(traces_spanmetrics_calls_total{status_code="STATUS_CODE_ERROR"}[1m])) > 0`); len(v) != 1 {
		t.Errorf("error rate %v", v)
	}
}
