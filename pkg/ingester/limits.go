package ingester

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// Limits are the per-tenant limits the ingester enforces. Declared here (by the
// consumer); pkg/util/validation.Overrides implements it.
type Limits interface {
	// MaxSeriesPerTenant is the maximum number of in-memory series of a tenant (0 = unlimited).
	MaxSeriesPerTenant(tenant string) int
	// MaxSeriesPerMetric is the maximum number of in-memory series per metric name (0 = unlimited).
	MaxSeriesPerMetric(tenant string) int
	// OutOfOrderTimeWindow is how far behind the newest sample a sample may still be accepted.
	OutOfOrderTimeWindow(tenant string) time.Duration
}

// seriesLimitError is returned from PreCreation; Push turns it into a rejection.
type seriesLimitError struct {
	reason string
	limit  int
}

// Error says which limit was hit. How to raise it is added by the distributor, which
// knows the flag and override names (pkg/util/validation) the limits come from.
func (e *seriesLimitError) Error() string {
	if e.reason == client.ReasonPerMetricSeriesLimit {
		return fmt.Sprintf("per-metric series limit of %d in-memory series reached for this metric name", e.limit)
	}
	return fmt.Sprintf("per-tenant series limit of %d in-memory series reached", e.limit)
}

// seriesLimiter enforces series limits where series are created: in the TSDB head's
// SeriesLifecycleCallback. Appends to existing series never hit it. It is disabled during
// WAL replay (enable is called after tsdb.Open) so a restart can never drop series that
// were accepted before, even if the limit was lowered meanwhile.
type seriesLimiter struct {
	tenant  string
	limits  Limits
	enabled atomic.Bool
	// numSeries reports the head's series count; set together with enabled.
	numSeries atomic.Pointer[func() uint64]

	mtx       sync.Mutex
	perMetric map[string]int

	// refs is told about deleted series; may be nil.
	refs *refCache
}

func newSeriesLimiter(tenant string, limits Limits, refs *refCache) *seriesLimiter {
	return &seriesLimiter{tenant: tenant, limits: limits, perMetric: map[string]int{}, refs: refs}
}

func (l *seriesLimiter) enable(numSeries func() uint64) {
	l.numSeries.Store(&numSeries)
	l.enabled.Store(true)
}

// PreCreation implements tsdb.SeriesLifecycleCallback.
func (l *seriesLimiter) PreCreation(lset labels.Labels) error {
	if l.limits == nil || !l.enabled.Load() {
		return nil
	}
	if max := l.limits.MaxSeriesPerTenant(l.tenant); max > 0 {
		if n := l.numSeries.Load(); n != nil && (*n)() >= uint64(max) {
			return &seriesLimitError{reason: client.ReasonPerUserSeriesLimit, limit: max}
		}
	}
	if max := l.limits.MaxSeriesPerMetric(l.tenant); max > 0 {
		name := lset.Get(labels.MetricName)
		l.mtx.Lock()
		n := l.perMetric[name]
		l.mtx.Unlock()
		if n >= max {
			return &seriesLimitError{reason: client.ReasonPerMetricSeriesLimit, limit: max}
		}
	}
	return nil
}

// PostCreation implements tsdb.SeriesLifecycleCallback. It also runs during WAL replay,
// so the per-metric counts are correct once limits are enabled.
func (l *seriesLimiter) PostCreation(lset labels.Labels) {
	name := lset.Get(labels.MetricName)
	l.mtx.Lock()
	l.perMetric[name]++
	l.mtx.Unlock()
}

// PostDeletion implements tsdb.SeriesLifecycleCallback.
func (l *seriesLimiter) PostDeletion(deleted map[chunks.HeadSeriesRef]labels.Labels) {
	if l.refs != nil {
		l.refs.deleted(deleted)
	}
	l.mtx.Lock()
	defer l.mtx.Unlock()
	for _, lset := range deleted {
		name := lset.Get(labels.MetricName)
		if l.perMetric[name] <= 1 {
			delete(l.perMetric, name)
			continue
		}
		l.perMetric[name]--
	}
}
