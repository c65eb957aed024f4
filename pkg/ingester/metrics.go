package ingester

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type ingesterMetrics struct {
	samplesAppended    prometheus.Counter
	histogramsAppended prometheus.Counter
	exemplarsAppended  prometheus.Counter
	rejected           *prometheus.CounterVec
	pushFailures       prometheus.Counter
	compactions        prometheus.Counter
	compactionFailures prometheus.Counter
	blocksShipped      prometheus.Counter
	shippingFailures   prometheus.Counter
	tsdbsClosed        prometheus.Counter
}

func newIngesterMetrics(reg prometheus.Registerer, i *Ingester) *ingesterMetrics {
	f := promauto.With(reg)
	m := &ingesterMetrics{
		samplesAppended:    f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_samples_appended_total", Help: "Float samples committed to a TSDB WAL."}),
		histogramsAppended: f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_histograms_appended_total", Help: "Native histogram samples committed to a TSDB WAL."}),
		exemplarsAppended:  f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_exemplars_appended_total", Help: "Exemplars committed to a TSDB WAL."}),
		rejected:           f.NewCounterVec(prometheus.CounterOpts{Name: "vigil_ingester_rejected_samples_total", Help: "Samples, histograms and exemplars the ingester rejected, by reason."}, []string{"reason"}),
		pushFailures:       f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_push_failures_total", Help: "Pushes that failed as a whole (nothing acknowledged)."}),
		compactions:        f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_head_compactions_total", Help: "Head compaction runs."}),
		compactionFailures: f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_head_compaction_failures_total", Help: "Head compaction runs that failed."}),
		blocksShipped:      f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_blocks_shipped_total", Help: "Blocks uploaded to object storage."}),
		shippingFailures:   f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_shipping_failures_total", Help: "Block uploads that failed (they are retried)."}),
		tsdbsClosed:        f.NewCounter(prometheus.CounterOpts{Name: "vigil_ingester_idle_tsdbs_closed_total", Help: "Idle tenant TSDBs closed and removed locally."}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_ingester_tenants", Help: "Tenants with an open TSDB on this ingester."}, func() float64 {
		return float64(len(i.tenantDBs()))
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_ingester_memory_series", Help: "Series in the TSDB heads of all tenants."}, func() float64 {
		var n uint64
		for _, db := range i.tenantDBs() {
			n += db.db.Head().NumSeries()
		}
		return float64(n)
	})
	if reg != nil {
		reg.MustRegister(localLimitsCollector{i: i})
	}
	return m
}

const localLimitsHelp = "Series limit this ingester enforces for a tenant: its share of the tenant-wide limit named by the limit label (limit * replication factor / healthy ingesters). Only tenants with an open TSDB and a non-zero limit."

var localLimitsDesc = prometheus.NewDesc("vigil_ingester_local_series_limit", localLimitsHelp, []string{"tenant", "limit"}, nil)

// localLimitsCollector exports the local series limits at scrape time, so an operator can
// see why a tenant is refused below its configured limit.
type localLimitsCollector struct{ i *Ingester }

func (localLimitsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- localLimitsDesc }

func (c localLimitsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.i.tenantDBs() {
		perTenant, perMetric := u.limiter.localLimits()
		if perTenant > 0 {
			ch <- prometheus.MustNewConstMetric(localLimitsDesc, prometheus.GaugeValue, float64(perTenant), u.tenant, "max_global_series_per_user")
		}
		if perMetric > 0 {
			ch <- prometheus.MustNewConstMetric(localLimitsDesc, prometheus.GaugeValue, float64(perMetric), u.tenant, "max_global_series_per_metric")
		}
	}
}
