package derived

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

type recordingPusher struct {
	mtx  sync.Mutex
	reqs map[string][]*prompb.WriteRequest
	fail error
}

func (p *recordingPusher) PushMetrics(ctx context.Context, req *prompb.WriteRequest) error {
	tenant, err := user.ExtractOrgID(ctx)
	if err != nil {
		return err
	}
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if p.fail != nil {
		return p.fail
	}
	if p.reqs == nil {
		p.reqs = map[string][]*prompb.WriteRequest{}
	}
	p.reqs[tenant] = append(p.reqs[tenant], req)
	return nil
}

// last returns the series of the tenant's latest write, keyed by their
// label set rendered as name{k="v",...}.
func (p *recordingPusher) last(t *testing.T, tenant string) map[string]prompb.TimeSeries {
	t.Helper()
	p.mtx.Lock()
	defer p.mtx.Unlock()
	reqs := p.reqs[tenant]
	if len(reqs) == 0 {
		t.Fatalf("nothing pushed for tenant %s", tenant)
	}
	out := map[string]prompb.TimeSeries{}
	for _, ts := range reqs[len(reqs)-1].Timeseries {
		for i := 1; i < len(ts.Labels); i++ {
			if ts.Labels[i-1].Name >= ts.Labels[i].Name {
				t.Fatalf("labels not sorted: %v", ts.Labels)
			}
		}
		out[seriesString(ts.Labels)] = ts
	}
	return out
}

func seriesString(lbls []prompb.Label) string {
	var name string
	var parts []string
	for _, l := range lbls {
		if l.Name == "__name__" {
			name = l.Value
			continue
		}
		parts = append(parts, l.Name+"=\""+l.Value+"\"")
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

func newTestGenerator(t *testing.T, now *time.Time) (*Generator, *recordingPusher) {
	t.Helper()
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	cfg.InstanceLabel = "" // exact label sets below
	p := &recordingPusher{}
	g, err := New(cfg, p, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g.now = func() time.Time { return *now }
	return g, p
}

type spanSpec struct {
	service      string
	id, parent   byte
	name         string
	kind         ptrace.SpanKind
	status       ptrace.StatusCode
	start, durMs int
	attrs        map[string]string
}

var testTraceID = pcommon.TraceID{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

func buildTrace(t0 time.Time, specs ...spanSpec) ptrace.Traces {
	td := ptrace.NewTraces()
	for _, sp := range specs {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", sp.service)
		s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		s.SetTraceID(testTraceID)
		s.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, sp.id})
		if sp.parent != 0 {
			s.SetParentSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, sp.parent})
		}
		s.SetName(sp.name)
		s.SetKind(sp.kind)
		s.Status().SetCode(sp.status)
		start := t0.Add(time.Duration(sp.start) * time.Millisecond)
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Duration(sp.durMs) * time.Millisecond)))
		for k, v := range sp.attrs {
			s.Attributes().PutStr(k, v)
		}
	}
	return td
}

// threeServiceTrace: a user calls frontend, frontend calls backend, backend
// calls storage (which fails) and an uninstrumented postgres.
func threeServiceTrace(t0 time.Time) ptrace.Traces {
	return buildTrace(t0,
		spanSpec{"frontend", 1, 0, "GET /", ptrace.SpanKindServer, ptrace.StatusCodeUnset, 0, 300, nil},
		spanSpec{"frontend", 2, 1, "GET /api", ptrace.SpanKindClient, ptrace.StatusCodeUnset, 10, 250, nil},
		spanSpec{"backend", 3, 2, "GET /api", ptrace.SpanKindServer, ptrace.StatusCodeOk, 20, 230, nil},
		spanSpec{"backend", 4, 3, "get-item", ptrace.SpanKindClient, ptrace.StatusCodeError, 30, 50, nil},
		spanSpec{"storage", 5, 4, "get-item", ptrace.SpanKindServer, ptrace.StatusCodeError, 35, 40, nil},
		spanSpec{"backend", 6, 3, "SELECT", ptrace.SpanKindClient, ptrace.StatusCodeUnset, 100, 20, map[string]string{"db.system": "postgresql", "db.name": "orders"}},
		spanSpec{"backend", 7, 3, "render", ptrace.SpanKindInternal, ptrace.StatusCodeUnset, 200, 1, nil},
	)
}

func value(t *testing.T, series map[string]prompb.TimeSeries, key string) float64 {
	t.Helper()
	ts, ok := series[key]
	if !ok {
		var keys []string
		for k := range series {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Fatalf("series %s missing; have:\n%s", key, strings.Join(keys, "\n"))
	}
	return ts.Samples[len(ts.Samples)-1].Value
}

func TestServiceGraphThreeServices(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	ctx := context.Background()
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now.Add(-time.Second)))

	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := p.last(t, "t1")
	for key, want := range map[string]float64{
		`traces_service_graph_request_total{client="user",connection_type="virtual_node",server="frontend"}`: 1,
		`traces_service_graph_request_total{client="frontend",server="backend"}`:                             1,
		`traces_service_graph_request_total{client="backend",server="storage"}`:                              1,
		`traces_service_graph_request_failed_total{client="backend",server="storage"}`:                       1,
		`traces_service_graph_request_server_seconds_count{client="frontend",server="backend"}`:              1,
		`traces_service_graph_request_server_seconds_sum{client="frontend",server="backend"}`:                0.23,
		`traces_service_graph_request_client_seconds_sum{client="frontend",server="backend"}`:                0.25,
		`traces_service_graph_request_server_seconds_bucket{client="frontend",le="0.2",server="backend"}`:    0,
		`traces_service_graph_request_server_seconds_bucket{client="frontend",le="0.4",server="backend"}`:    1,
		`traces_service_graph_request_server_seconds_bucket{client="frontend",le="+Inf",server="backend"}`:   1,
	} {
		if got := value(t, s, key); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	if _, ok := s[`traces_service_graph_request_failed_total{client="frontend",server="backend"}`]; ok {
		t.Error("frontend→backend has a failed series but nothing failed")
	}
	// The database call waits for a server side that never comes.
	if _, ok := s[`traces_service_graph_request_total{client="backend",connection_type="database",server="orders"}`]; ok {
		t.Error("virtual database edge recorded before the wait expired")
	}

	// After the wait, the postgres call becomes a database edge.
	now = now.Add(11 * time.Second)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s = p.last(t, "t1")
	if got := value(t, s, `traces_service_graph_request_total{client="backend",connection_type="database",server="orders"}`); got != 1 {
		t.Errorf("database edge = %v", got)
	}
	if _, ok := s[`traces_service_graph_request_server_seconds_count{client="backend",connection_type="database",server="orders"}`]; ok {
		t.Error("uninstrumented database has server-side latency")
	}
	// Cumulative: the earlier edges are still written with the same values.
	if got := value(t, s, `traces_service_graph_request_total{client="frontend",server="backend"}`); got != 1 {
		t.Errorf("frontend→backend after second flush = %v", got)
	}
}

func TestSpanMetrics(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	ctx := context.Background()
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now.Add(-time.Second)))
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := p.last(t, "t1")
	for key, want := range map[string]float64{
		`traces_spanmetrics_calls_total{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`:               1,
		`traces_spanmetrics_calls_total{service="backend",span_kind="SPAN_KIND_SERVER",span_name="GET /api",status_code="STATUS_CODE_OK"}`:                1,
		`traces_spanmetrics_calls_total{service="storage",span_kind="SPAN_KIND_SERVER",span_name="get-item",status_code="STATUS_CODE_ERROR"}`:             1,
		`traces_spanmetrics_calls_total{service="backend",span_kind="SPAN_KIND_INTERNAL",span_name="render",status_code="STATUS_CODE_UNSET"}`:             1,
		`traces_spanmetrics_latency_count{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`:             1,
		`traces_spanmetrics_latency_sum{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`:               0.3,
		`traces_spanmetrics_latency_bucket{le="0.256",service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`: 0,
		`traces_spanmetrics_latency_bucket{le="0.512",service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`: 1,
	} {
		if got := value(t, s, key); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	size := value(t, s, `traces_spanmetrics_size_total{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`)
	if size < 30 || size > 80 {
		t.Errorf("span size %v bytes: not the size of a small span", size)
	}
	// New series start with a zero sample so rate() sees the first call,
	// and carry the trace ID as an exemplar.
	calls := s[`traces_spanmetrics_calls_total{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`]
	if len(calls.Samples) != 2 || calls.Samples[0].Value != 0 || calls.Samples[0].Timestamp >= calls.Samples[1].Timestamp {
		t.Errorf("first write samples %+v: want a zero then the value", calls.Samples)
	}
	if len(calls.Exemplars) != 1 || calls.Exemplars[0].Labels[0].Name != "trace_id" || calls.Exemplars[0].Labels[0].Value != testTraceID.String() {
		t.Errorf("exemplars %+v", calls.Exemplars)
	}
	bucketEx := s[`traces_spanmetrics_latency_bucket{le="0.512",service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`].Exemplars
	if len(bucketEx) != 1 || bucketEx[0].Value != 0.3 {
		t.Errorf("bucket exemplar %+v", bucketEx)
	}

	// Second trace, second flush: cumulative values, a single sample, no
	// stale exemplar repeated.
	now = now.Add(15 * time.Second)
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now.Add(-time.Second)))
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s = p.last(t, "t1")
	calls = s[`traces_spanmetrics_calls_total{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`]
	if len(calls.Samples) != 1 || calls.Samples[0].Value != 2 {
		t.Errorf("second write %+v, want one sample of 2", calls.Samples)
	}
	if got := value(t, s, `traces_spanmetrics_latency_count{service="frontend",span_kind="SPAN_KIND_SERVER",span_name="GET /",status_code="STATUS_CODE_UNSET"}`); got != 2 {
		t.Errorf("latency count %v", got)
	}

	// Tenants are separate.
	g.ConsumeTraces(ctx, "t2", buildTrace(now, spanSpec{"solo", 1, 0, "x", ptrace.SpanKindInternal, ptrace.StatusCodeUnset, 0, 1, nil}))
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for k := range p.last(t, "t2") {
		if strings.Contains(k, "frontend") {
			t.Fatalf("tenant t2 got t1's series %s", k)
		}
	}
}

func TestUnpairedAndDropped(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	g.cfg.ServiceGraphMaxEdge = 1
	ctx := context.Background()
	g.ConsumeTraces(ctx, "t1", buildTrace(now,
		spanSpec{"a", 1, 9, "x", ptrace.SpanKindServer, ptrace.StatusCodeUnset, 0, 1, nil}, // parent never arrives
		spanSpec{"b", 2, 0, "y", ptrace.SpanKindClient, ptrace.StatusCodeUnset, 0, 1, nil}, // store full
	))
	now = now.Add(time.Minute)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s := p.last(t, "t1")
	if got := value(t, s, `traces_service_graph_unpaired_spans_total{client="",server="a"}`); got != 1 {
		t.Errorf("unpaired = %v", got)
	}
	if got := value(t, s, `traces_service_graph_dropped_spans_total{client="b",server=""}`); got != 1 {
		t.Errorf("dropped = %v", got)
	}
}

func TestFlushErrorKeepsState(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	ctx := context.Background()
	g.ConsumeTraces(ctx, "t1", threeServiceTrace(now))
	p.fail = errors.New("ingesters down")
	if err := g.Flush(ctx); err == nil || !strings.Contains(err.Error(), "tenant t1") {
		t.Fatalf("flush error %v", err)
	}
	p.fail = nil
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := value(t, p.last(t, "t1"), `traces_service_graph_request_total{client="frontend",server="backend"}`); got != 1 {
		t.Errorf("after retry = %v", got)
	}
}

func TestSeriesLimit(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, _ := newTestGenerator(t, &now)
	g.cfg.MaxSeriesPerTenant = 3
	g.ConsumeTraces(context.Background(), "t1", threeServiceTrace(now))
	ts := g.tenant("t1")
	if n := len(ts.reg.counters) + len(ts.reg.hists); n != 3 {
		t.Errorf("%d series, limit 3", n)
	}
}

func TestInstanceLabel(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	g, p := newTestGenerator(t, &now)
	g.cfg.InstanceLabel = "distributor-1"
	g.ConsumeTraces(context.Background(), "t1", threeServiceTrace(now))
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := p.last(t, "t1")
	if len(s) == 0 {
		t.Fatal("no series")
	}
	for k := range s {
		if !strings.Contains(k, `__metrics_gen_instance="distributor-1"`) {
			t.Errorf("series %s lacks the instance label", k)
		}
	}
}
