// Package derived turns ingested spans into Tempo-compatible metrics: span
// metrics (traces_spanmetrics_*) and service-graph metrics
// (traces_service_graph_*). Grafana's service graph, node graph and RED
// panels query these names, so they follow Tempo's metrics-generator naming
// and label values exactly. Series are cumulative and written periodically
// through the tenant's normal metrics write path, so metrics limits apply.
package derived

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/prompb"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Metric names, as Tempo's metrics-generator writes them.
const (
	MetricCalls              = "traces_spanmetrics_calls_total"
	MetricLatency            = "traces_spanmetrics_latency"
	MetricSize               = "traces_spanmetrics_size_total"
	MetricRequestTotal       = "traces_service_graph_request_total"
	MetricRequestFailedTotal = "traces_service_graph_request_failed_total"
	MetricServerSeconds      = "traces_service_graph_request_server_seconds"
	MetricClientSeconds      = "traces_service_graph_request_client_seconds"
	MetricUnpairedSpans      = "traces_service_graph_unpaired_spans_total"
	MetricDroppedSpans       = "traces_service_graph_dropped_spans_total"
)

// Connection types of service-graph edges (label connection_type).
const (
	ConnVirtualNode     = "virtual_node"
	ConnMessagingSystem = "messaging_system"
	ConnDatabase        = "database"
)

// MetricsPusher writes derived series into a tenant's metrics (tenant in
// ctx via dskit user). The distributor's PushMetrics does this, with the
// same validation and limits as remote write.
type MetricsPusher interface {
	PushMetrics(ctx context.Context, req *prompb.WriteRequest) error
}

// MetricsPusherFunc adapts a function to MetricsPusher, e.g.
// func(ctx, req) error { _, err := d.PushMetrics(ctx, req); return err }.
type MetricsPusherFunc func(ctx context.Context, req *prompb.WriteRequest) error

// PushMetrics implements MetricsPusher.
func (f MetricsPusherFunc) PushMetrics(ctx context.Context, req *prompb.WriteRequest) error {
	return f(ctx, req)
}

// Config configures derived metrics.
type Config struct {
	Enabled             bool          `yaml:"enabled"`
	FlushInterval       time.Duration `yaml:"flush_interval"`
	LatencyBuckets      floatList     `yaml:"span_metrics_latency_buckets"`
	ServiceGraphBuckets floatList     `yaml:"service_graph_buckets"`
	ServiceGraphWait    time.Duration `yaml:"service_graph_wait"`
	ServiceGraphMaxEdge int           `yaml:"service_graph_max_items"`
	StaleSeriesTimeout  time.Duration `yaml:"stale_series_timeout"`
	MaxSeriesPerTenant  int           `yaml:"max_series_per_tenant"`
	// InstanceLabel is written as label __metrics_gen_instance (Tempo's
	// name for it) on every series. Each distributor aggregates only the
	// spans it received, so two distributors writing the same series
	// without it would interleave unrelated cumulative values.
	InstanceLabel string `yaml:"instance_label"`
}

// RegisterFlags registers the derived-metrics flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	// Tempo's defaults: exponential from 2ms for span latency, from 100ms
	// for service-graph edges.
	c.LatencyBuckets = floatList{0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384}
	c.ServiceGraphBuckets = floatList{0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8}
	f.BoolVar(&c.Enabled, "traces.derived-metrics.enabled", true, "Derive Tempo-compatible span metrics and service-graph metrics from ingested spans and write them to the tenant's metrics.")
	f.DurationVar(&c.FlushInterval, "traces.derived-metrics.flush-interval", 15*time.Second, "How often derived series are written.")
	f.Var(&c.LatencyBuckets, "traces.derived-metrics.latency-buckets", "Comma-separated histogram buckets (seconds) of traces_spanmetrics_latency.")
	f.Var(&c.ServiceGraphBuckets, "traces.derived-metrics.service-graph-buckets", "Comma-separated histogram buckets (seconds) of traces_service_graph_request_{server,client}_seconds.")
	f.DurationVar(&c.ServiceGraphWait, "traces.derived-metrics.service-graph-wait", 10*time.Second, "How long an unpaired client or server span waits for its other side before it counts as unpaired.")
	f.IntVar(&c.ServiceGraphMaxEdge, "traces.derived-metrics.service-graph-max-items", 10000, "Maximum unpaired edges held per tenant; spans beyond it count in traces_service_graph_dropped_spans_total.")
	f.DurationVar(&c.StaleSeriesTimeout, "traces.derived-metrics.stale-series-timeout", 15*time.Minute, "Derived series not updated for this long stop being written.")
	f.IntVar(&c.MaxSeriesPerTenant, "traces.derived-metrics.max-series-per-tenant", 50000, "Maximum derived series per tenant; 0 means no limit.")
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	f.StringVar(&c.InstanceLabel, "traces.derived-metrics.instance-label", host, "Value of the __metrics_gen_instance label on derived series, unique per distributor (defaults to the host name; set it to the instance ID when several distributors share a host). Empty omits the label.")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.FlushInterval <= 0 {
		return fmt.Errorf("traces.derived-metrics.flush-interval: must be positive, got %s", c.FlushInterval)
	}
	for name, b := range map[string]floatList{"latency-buckets": c.LatencyBuckets, "service-graph-buckets": c.ServiceGraphBuckets} {
		if len(b) == 0 || !sort.Float64sAreSorted(b) {
			return fmt.Errorf("traces.derived-metrics.%s: want a non-empty ascending list, got %v", name, []float64(b))
		}
	}
	return nil
}

// floatList is a comma-separated list of floats as a flag.
type floatList []float64

func (l *floatList) String() string {
	if l == nil {
		return ""
	}
	parts := make([]string, len(*l))
	for i, v := range *l {
		parts[i] = strconv.FormatFloat(v, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

func (l *floatList) Set(s string) error {
	var out floatList
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return fmt.Errorf("bucket %q: %w", p, err)
		}
		out = append(out, v)
	}
	*l = out
	return nil
}

// Generator aggregates derived metrics per tenant and writes them.
type Generator struct {
	services.Service

	cfg    Config
	pusher MetricsPusher
	logger *slog.Logger
	now    func() time.Time

	mtx     sync.Mutex
	tenants map[string]*tenantState

	droppedSeries *prometheus.CounterVec
	pushFailures  *prometheus.CounterVec
}

type tenantState struct {
	mtx   sync.Mutex
	reg   *registry
	edges map[edgeKey]*edge
	// spans caches span-metrics series by span identity. It is cleared
	// whenever stale series leave the registry, so it never points at a
	// series that is no longer written.
	spans map[spanKey]*spanSeries
}

// New builds a Generator. Its service flushes every FlushInterval and once
// more when stopping.
func New(cfg Config, pusher MetricsPusher, reg prometheus.Registerer, logger *slog.Logger) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("derived metrics config: %w", err)
	}
	if pusher == nil {
		return nil, errors.New("derived metrics: a metrics pusher is required")
	}
	g := &Generator{
		cfg:     cfg,
		pusher:  pusher,
		logger:  logger,
		now:     time.Now,
		tenants: map[string]*tenantState{},
		droppedSeries: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_derived_metrics_series_dropped_total",
			Help: "Derived-metrics updates dropped because the tenant reached its derived series limit.",
		}, []string{"tenant"}),
		pushFailures: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_derived_metrics_push_failures_total",
			Help: "Failed writes of derived metrics.",
		}, []string{"tenant"}),
	}
	g.Service = services.NewTimerService(cfg.FlushInterval, nil, g.iteration, g.stopping)
	return g, nil
}

func (g *Generator) iteration(ctx context.Context) error {
	if err := g.Flush(ctx); err != nil {
		// A failed write is retried with cumulative values at the next
		// tick; it must not stop the service.
		g.logger.Warn("writing derived metrics failed", "err", err)
	}
	return nil
}

func (g *Generator) stopping(_ error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.Flush(ctx)
}

func (g *Generator) tenant(id string) *tenantState {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	ts, ok := g.tenants[id]
	if !ok {
		ts = &tenantState{reg: newRegistry(g.cfg.MaxSeriesPerTenant, g.cfg.InstanceLabel), edges: map[edgeKey]*edge{}, spans: map[spanKey]*spanSeries{}}
		g.tenants[id] = ts
	}
	return ts
}

// ConsumeTraces implements the receiver's SpanConsumer: it updates span
// metrics and pairs service-graph edges. It does not retain td.
func (g *Generator) ConsumeTraces(_ context.Context, tenant string, td ptrace.Traces) {
	ts := g.tenant(tenant)
	now := g.now()
	ts.mtx.Lock()
	defer ts.mtx.Unlock()
	dropped := 0
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		service := serviceName(rs.Resource())
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				span := spans.At(k)
				if !g.spanMetrics(ts, service, span, translate.SpanSize(span), now) {
					dropped++
				}
				if !g.serviceGraph(ts, service, span, now) {
					dropped++
				}
			}
		}
	}
	if dropped > 0 {
		g.droppedSeries.WithLabelValues(tenant).Add(float64(dropped))
	}
}

func serviceName(res pcommon.Resource) string {
	if v, ok := res.Attributes().Get("service.name"); ok {
		return v.AsString()
	}
	// The OpenTelemetry SDK default; an empty label would drop the series'
	// service dimension altogether.
	return "unknown_service"
}

// spanKindLabel renders the kind as Tempo does: the OTLP enum name.
func spanKindLabel(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindInternal:
		return "SPAN_KIND_INTERNAL"
	case ptrace.SpanKindServer:
		return "SPAN_KIND_SERVER"
	case ptrace.SpanKindClient:
		return "SPAN_KIND_CLIENT"
	case ptrace.SpanKindProducer:
		return "SPAN_KIND_PRODUCER"
	case ptrace.SpanKindConsumer:
		return "SPAN_KIND_CONSUMER"
	}
	return "SPAN_KIND_UNSPECIFIED"
}

func statusLabel(c ptrace.StatusCode) string {
	switch c {
	case ptrace.StatusCodeOk:
		return "STATUS_CODE_OK"
	case ptrace.StatusCodeError:
		return "STATUS_CODE_ERROR"
	}
	return "STATUS_CODE_UNSET"
}

func durationSeconds(s ptrace.Span) float64 {
	start, end := s.StartTimestamp(), s.EndTimestamp()
	if end <= start {
		return 0
	}
	return float64(end-start) / 1e9
}

// spanKey identifies the span-metrics series of a span; it is a struct so
// that the hot path finds its series without building label strings.
type spanKey struct {
	service, name string
	kind          ptrace.SpanKind
	status        ptrace.StatusCode
}

// spanSeries are the three span-metrics series of one spanKey.
type spanSeries struct {
	calls, size *counter
	latency     *histogram
}

func (g *Generator) spanMetrics(ts *tenantState, service string, span ptrace.Span, size int, now time.Time) bool {
	key := spanKey{service, span.Name(), span.Kind(), span.Status().Code()}
	ss, ok := ts.spans[key]
	if !ok {
		// All three series or none: a lone calls series without its
		// latency histogram would mislead the RED panels.
		if ts.reg.maxSeries > 0 && len(ts.reg.counters)+len(ts.reg.hists)+3 > ts.reg.maxSeries {
			return false
		}
		lbls := []label{ // sorted by name
			{"service", service},
			{"span_kind", spanKindLabel(key.kind)},
			{"span_name", key.name},
			{"status_code", statusLabel(key.status)},
		}
		ss = &spanSeries{
			calls:   ts.reg.counter(MetricCalls, lbls, now),
			latency: ts.reg.histogram(MetricLatency, lbls, g.cfg.LatencyBuckets, now),
			size:    ts.reg.counter(MetricSize, lbls, now),
		}
		ts.spans[key] = ss
	}
	id := span.TraceID()
	ss.calls.add(1, now, id)
	ss.latency.observe(durationSeconds(span), now, id)
	ss.size.add(float64(size), now, pcommon.TraceID{})
	return true
}

// Flush expires service-graph edges that waited long enough and writes
// every tenant's series. Tests call it directly instead of waiting for the
// timer.
func (g *Generator) Flush(ctx context.Context) error {
	g.mtx.Lock()
	tenants := make([]string, 0, len(g.tenants))
	for id := range g.tenants {
		tenants = append(tenants, id)
	}
	g.mtx.Unlock()
	sort.Strings(tenants)

	var errs []error
	for _, id := range tenants {
		ts := g.tenant(id)
		now := g.now()
		ts.mtx.Lock()
		g.expireEdges(ts, now, false)
		if ts.reg.removeStale(now.Add(-g.cfg.StaleSeriesTimeout)) > 0 {
			ts.spans = map[spanKey]*spanSeries{}
		}
		series := ts.reg.appendTo(nil, now)
		ts.mtx.Unlock()
		if len(series) == 0 {
			continue
		}
		req := &prompb.WriteRequest{Timeseries: series}
		if err := g.pusher.PushMetrics(user.InjectOrgID(ctx, id), req); err != nil {
			g.pushFailures.WithLabelValues(id).Inc()
			errs = append(errs, fmt.Errorf("push derived metrics for tenant %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
