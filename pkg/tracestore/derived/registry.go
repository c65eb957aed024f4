package derived

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// label is one name/value pair of a series; series keep them sorted by name
// because remote write requires it.
type label struct{ name, value string }

// seriesKey identifies a series inside a tenant's registry.
func seriesKey(name string, lbls []label) string {
	var b strings.Builder
	b.WriteString(name)
	for _, l := range lbls {
		b.WriteByte(0xff)
		b.WriteString(l.name)
		b.WriteByte(0xfe)
		b.WriteString(l.value)
	}
	return b.String()
}

// exemplar is the latest trace that contributed to a series (or to a
// histogram bucket); it is sent once and then cleared. It is kept by value
// with the raw ID, and rendered as hex only when written, because it is
// replaced on every span.
type exemplar struct {
	set     bool
	traceID pcommon.TraceID
	value   float64
	ts      time.Time
}

// counter is a cumulative counter series.
type counter struct {
	name    string
	labels  []label
	value   float64
	created time.Time
	updated time.Time
	sent    bool // at least one flush has carried it
	ex      exemplar
}

// histogram is a classic cumulative histogram series.
type histogram struct {
	name    string
	labels  []label
	bounds  []float64
	counts  []uint64 // per bound, not cumulative; the last slot is +Inf
	sum     float64
	count   uint64
	created time.Time
	updated time.Time
	sent    bool
	ex      exemplar
	exIdx   int // bucket the exemplar falls in
}

// registry holds a tenant's derived series.
type registry struct {
	maxSeries int
	extra     []label // added to every series on write
	counters  map[string]*counter
	hists     map[string]*histogram
}

func newRegistry(maxSeries int, instance string) *registry {
	r := &registry{maxSeries: maxSeries, counters: map[string]*counter{}, hists: map[string]*histogram{}}
	if instance != "" {
		r.extra = []label{{"__metrics_gen_instance", instance}}
	}
	return r
}

func (r *registry) full() bool {
	return r.maxSeries > 0 && len(r.counters)+len(r.hists) >= r.maxSeries
}

// counter returns the counter series, creating it; nil when it is new and
// the tenant is at its series limit.
func (r *registry) counter(name string, lbls []label, now time.Time) *counter {
	key := seriesKey(name, lbls)
	c, ok := r.counters[key]
	if !ok {
		if r.full() {
			return nil
		}
		c = &counter{name: name, labels: lbls, created: now}
		r.counters[key] = c
	}
	return c
}

// histogram returns the histogram series, creating it; nil when it is new
// and the tenant is at its series limit.
func (r *registry) histogram(name string, lbls []label, bounds []float64, now time.Time) *histogram {
	key := seriesKey(name, lbls)
	h, ok := r.hists[key]
	if !ok {
		if r.full() {
			return nil
		}
		h = &histogram{name: name, labels: lbls, bounds: bounds, counts: make([]uint64, len(bounds)+1), created: now}
		r.hists[key] = h
	}
	return h
}

// add adds v; a non-empty traceID becomes the exemplar.
func (c *counter) add(v float64, now time.Time, traceID pcommon.TraceID) {
	c.value += v
	c.updated = now
	if !traceID.IsEmpty() {
		c.ex = exemplar{set: true, traceID: traceID, value: c.value, ts: now}
	}
}

// observe records v.
func (h *histogram) observe(v float64, now time.Time, traceID pcommon.TraceID) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v: le semantics
	h.counts[i]++
	h.sum += v
	h.count++
	h.updated = now
	if !traceID.IsEmpty() {
		h.ex = exemplar{set: true, traceID: traceID, value: v, ts: now}
		h.exIdx = i
	}
}

// addCounter adds v to a counter series; false when the series is new and
// the tenant is at its series limit.
func (r *registry) addCounter(name string, lbls []label, v float64, now time.Time, traceID pcommon.TraceID) bool {
	c := r.counter(name, lbls, now)
	if c == nil {
		return false
	}
	c.add(v, now, traceID)
	return true
}

// observe records v in a histogram series.
func (r *registry) observe(name string, lbls []label, bounds []float64, v float64, now time.Time, traceID pcommon.TraceID) bool {
	h := r.histogram(name, lbls, bounds, now)
	if h == nil {
		return false
	}
	h.observe(v, now, traceID)
	return true
}

// removeStale drops series not updated since cutoff, so series of services
// that went away stop being written (Prometheus marks them stale). It
// returns how many were dropped.
func (r *registry) removeStale(cutoff time.Time) int {
	n := 0
	for k, c := range r.counters {
		if c.updated.Before(cutoff) {
			delete(r.counters, k)
			n++
		}
	}
	for k, h := range r.hists {
		if h.updated.Before(cutoff) {
			delete(r.hists, k)
			n++
		}
	}
	return n
}

func promLabels(name string, lbls []label, extra ...label) []prompb.Label {
	out := make([]prompb.Label, 0, len(lbls)+len(extra)+1)
	out = append(out, prompb.Label{Name: "__name__", Value: name})
	for _, l := range lbls {
		out = append(out, prompb.Label{Name: l.name, Value: l.value})
	}
	for _, l := range extra {
		out = append(out, prompb.Label{Name: l.name, Value: l.value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// samples returns the cumulative samples of a series at ts. A series seen
// for the first time also gets a zero sample at its creation time, so that
// rate() and increase() count its first events (otherwise the first
// written value is the baseline and they are lost), as Tempo does.
func samples(sent bool, created time.Time, ts int64, v float64) []prompb.Sample {
	if sent {
		return []prompb.Sample{{Value: v, Timestamp: ts}}
	}
	start := created.UnixMilli()
	if start >= ts {
		start = ts - 1
	}
	return []prompb.Sample{{Value: 0, Timestamp: start}, {Value: v, Timestamp: ts}}
}

func promExemplar(ex exemplar) []prompb.Exemplar {
	if !ex.set {
		return nil
	}
	return []prompb.Exemplar{{
		Labels:    []prompb.Label{{Name: "trace_id", Value: ex.traceID.String()}},
		Value:     ex.value,
		Timestamp: ex.ts.UnixMilli(),
	}}
}

func formatBound(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(b, 'g', -1, 64)
}

// appendTo writes every series as cumulative samples at now and marks
// them sent.
func (r *registry) appendTo(ts []prompb.TimeSeries, now time.Time) []prompb.TimeSeries {
	ms := now.UnixMilli()
	keys := make([]string, 0, len(r.counters))
	for k := range r.counters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := r.counters[k]
		ts = append(ts, prompb.TimeSeries{
			Labels:    promLabels(c.name, c.labels, r.extra...),
			Samples:   samples(c.sent, c.created, ms, c.value),
			Exemplars: promExemplar(c.ex),
		})
		c.sent, c.ex = true, exemplar{}
	}
	keys = keys[:0]
	for k := range r.hists {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h := r.hists[k]
		var cum uint64
		for i := 0; i <= len(h.bounds); i++ {
			cum += h.counts[i]
			bound := math.Inf(1)
			if i < len(h.bounds) {
				bound = h.bounds[i]
			}
			series := prompb.TimeSeries{
				Labels:  promLabels(h.name+"_bucket", h.labels, append([]label{{"le", formatBound(bound)}}, r.extra...)...),
				Samples: samples(h.sent, h.created, ms, float64(cum)),
			}
			if h.ex.set && h.exIdx == i {
				series.Exemplars = promExemplar(h.ex)
			}
			ts = append(ts, series)
		}
		ts = append(ts,
			prompb.TimeSeries{Labels: promLabels(h.name+"_sum", h.labels, r.extra...), Samples: samples(h.sent, h.created, ms, h.sum)},
			prompb.TimeSeries{Labels: promLabels(h.name+"_count", h.labels, r.extra...), Samples: samples(h.sent, h.created, ms, float64(h.count))},
		)
		h.sent, h.ex = true, exemplar{}
	}
	return ts
}
