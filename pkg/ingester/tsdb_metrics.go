package ingester

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// tsdbMetrics exposes the Prometheus TSDB's own metrics (prometheus_tsdb_*: head
// series, WAL fsyncs and corruptions, compactions, ...) of every open tenant TSDB with
// a tenant label. Each TSDB registers into its own registry: Prometheus registers fixed
// metric names per DB, so several tenants (or one tenant reopened after an idle close)
// cannot share the process registry.
type tsdbMetrics struct {
	mtx  sync.RWMutex
	regs map[string]*prometheus.Registry
}

func newTSDBMetrics() *tsdbMetrics {
	return &tsdbMetrics{regs: map[string]*prometheus.Registry{}}
}

// registry returns a fresh registry for the tenant's TSDB, replacing any previous one.
func (m *tsdbMetrics) registry(tenant string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	m.mtx.Lock()
	m.regs[tenant] = reg
	m.mtx.Unlock()
	return reg
}

func (m *tsdbMetrics) remove(tenant string) {
	m.mtx.Lock()
	delete(m.regs, tenant)
	m.mtx.Unlock()
}

// Describe implements prometheus.Collector. It describes nothing: the set of metrics
// depends on which tenants are open, which makes this an unchecked collector.
func (m *tsdbMetrics) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (m *tsdbMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mtx.RLock()
	tenants := make([]string, 0, len(m.regs))
	regs := make(map[string]*prometheus.Registry, len(m.regs))
	for t, r := range m.regs {
		tenants = append(tenants, t)
		regs[t] = r
	}
	m.mtx.RUnlock()
	sort.Strings(tenants)
	for _, t := range tenants {
		mfs, err := regs[t].Gather()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(prometheus.NewDesc("vigil_ingester_tsdb_metrics_error", "Gathering a tenant TSDB's metrics failed.", nil, prometheus.Labels{"tenant": t}), err)
			continue
		}
		for _, mf := range mfs {
			for _, metric := range mf.Metric {
				names := make([]string, 0, len(metric.Label)+1)
				for _, lp := range metric.Label {
					names = append(names, lp.GetName())
				}
				names = append(names, "tenant")
				ch <- &tenantMetric{
					desc:   prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil),
					metric: metric,
					tenant: t,
				}
			}
		}
	}
}

// tenantMetric is a gathered TSDB metric with the tenant label added.
type tenantMetric struct {
	desc   *prometheus.Desc
	metric *dto.Metric
	tenant string
}

func (t *tenantMetric) Desc() *prometheus.Desc { return t.desc }

func (t *tenantMetric) Write(out *dto.Metric) error {
	proto.Reset(out)
	proto.Merge(out, t.metric)
	out.Label = append(out.Label, &dto.LabelPair{Name: proto.String("tenant"), Value: proto.String(t.tenant)})
	sort.Slice(out.Label, func(a, b int) bool { return out.Label[a].GetName() < out.Label[b].GetName() })
	return nil
}
