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
	// MaxSeriesPerTenant is the maximum number of in-memory series of a tenant across all
	// ingesters (0 = unlimited); each ingester enforces its share (ringShare).
	MaxSeriesPerTenant(tenant string) int
	// MaxSeriesPerMetric is the maximum number of in-memory series per metric name across
	// all ingesters (0 = unlimited); each ingester enforces its share.
	MaxSeriesPerMetric(tenant string) int
	// OutOfOrderTimeWindow is how far behind the newest sample a sample may still be accepted.
	OutOfOrderTimeWindow(tenant string) time.Duration
}

// seriesLimitError is returned from PreCreation; Push turns it into a rejection.
type seriesLimitError struct {
	reason string
	// limit is the configured (global) limit, local this ingester's share of it.
	limit, local int
	share        *limitShare
}

// Error says which limit was hit and, when this ingester enforces only a share of it, how
// large the share is and why. How to raise the limit is added by the distributor, which
// knows the flag and override names (pkg/util/validation) the limits come from.
func (e *seriesLimitError) Error() string {
	var msg string
	if e.reason == client.ReasonPerMetricSeriesLimit {
		msg = fmt.Sprintf("per-metric series limit of %d in-memory series reached for this metric name", e.limit)
	} else {
		msg = fmt.Sprintf("per-tenant series limit of %d in-memory series reached", e.limit)
	}
	if e.local != e.limit && e.share != nil {
		msg += fmt.Sprintf(" (the limit is across all ingesters: this ingester's share is %d, with %s)", e.local, e.share)
	}
	return msg
}

// seriesLimiter enforces series limits where series are created: in the TSDB head's
// SeriesLifecycleCallback. Appends to existing series never hit it. It is disabled during
// WAL replay (enable is called after tsdb.Open) so a restart can never drop series that
// were accepted before, even if the limit was lowered meanwhile.
type seriesLimiter struct {
	tenant  string
	limits  Limits
	share   *ringShare // may be nil: the whole limit
	enabled atomic.Bool
	// numSeries reports the head's series count; set together with enabled.
	numSeries atomic.Pointer[func() uint64]

	mtx       sync.Mutex
	perMetric map[string]int

	// refs is told about deleted series; may be nil.
	refs *refCache
}

func newSeriesLimiter(tenant string, limits Limits, share *ringShare, refs *refCache) *seriesLimiter {
	return &seriesLimiter{tenant: tenant, limits: limits, share: share, perMetric: map[string]int{}, refs: refs}
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
	share := l.share.load()
	if global := l.limits.MaxSeriesPerTenant(l.tenant); global > 0 {
		local := share.local(global)
		if n := l.numSeries.Load(); n != nil && (*n)() >= uint64(local) {
			return &seriesLimitError{reason: client.ReasonPerUserSeriesLimit, limit: global, local: local, share: share}
		}
	}
	if global := l.limits.MaxSeriesPerMetric(l.tenant); global > 0 {
		local := share.local(global)
		name := lset.Get(labels.MetricName)
		l.mtx.Lock()
		n := l.perMetric[name]
		l.mtx.Unlock()
		if n >= local {
			return &seriesLimitError{reason: client.ReasonPerMetricSeriesLimit, limit: global, local: local, share: share}
		}
	}
	return nil
}

// localLimits returns the limits this ingester enforces for the tenant now (0 = unlimited).
func (l *seriesLimiter) localLimits() (perTenant, perMetric int) {
	if l.limits == nil {
		return 0, 0
	}
	share := l.share.load()
	return share.local(l.limits.MaxSeriesPerTenant(l.tenant)), share.local(l.limits.MaxSeriesPerMetric(l.tenant))
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
