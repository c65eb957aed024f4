package distributor

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	receivedSamples   *prometheus.CounterVec
	receivedExemplars *prometheus.CounterVec
	receivedMetadata  *prometheus.CounterVec
	discardedSamples  *prometheus.CounterVec
	discardedExemplar *prometheus.CounterVec
	ingesterPushes    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		receivedSamples: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_distributor_received_samples_total",
			Help: "Samples and native histogram samples received by the distributor, before validation and limits.",
		}, []string{"tenant"}),
		receivedExemplars: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_distributor_received_exemplars_total",
			Help: "Exemplars received by the distributor, before validation and limits.",
		}, []string{"tenant"}),
		receivedMetadata: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_distributor_received_metadata_total",
			Help: "Metric metadata entries received by the distributor.",
		}, []string{"tenant"}),
		discardedSamples: sharedCounterVec(reg, prometheus.CounterOpts{
			Name: "vigil_discarded_samples_total",
			Help: "Samples (including native histogram samples) refused, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		discardedExemplar: sharedCounterVec(reg, prometheus.CounterOpts{
			Name: "vigil_discarded_exemplars_total",
			Help: "Exemplars refused, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		ingesterPushes: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_distributor_ingester_pushes_total",
			Help: "Pushes from the distributor to ingesters, by outcome.",
		}, []string{"outcome"}),
	}
}

// sharedCounterVec registers a counter vector or, when another component in
// the same process (e.g. the ingester) already registered it with the same
// labels, reuses that one: vigil_discarded_*_total is one series per
// (tenant, reason) whoever refused the data.
func sharedCounterVec(reg prometheus.Registerer, opts prometheus.CounterOpts, labelNames []string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(opts, labelNames)
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		panic(err) // programming error: conflicting definition of a metric name
	}
	return c
}

func (m *metrics) received(tenant string, samples, histograms, exemplars, metadata int) {
	if n := samples + histograms; n > 0 {
		m.receivedSamples.WithLabelValues(tenant).Add(float64(n))
	}
	if exemplars > 0 {
		m.receivedExemplars.WithLabelValues(tenant).Add(float64(exemplars))
	}
	if metadata > 0 {
		m.receivedMetadata.WithLabelValues(tenant).Add(float64(metadata))
	}
}

func (m *metrics) discard(tenant, reason string, samples, exemplars int) {
	if samples > 0 {
		m.discardedSamples.WithLabelValues(tenant, reason).Add(float64(samples))
	}
	if exemplars > 0 {
		m.discardedExemplar.WithLabelValues(tenant, reason).Add(float64(exemplars))
	}
}
