package distributor

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// seriesLimits is the per-request snapshot of a tenant's validation limits,
// read once so a runtime reload cannot change them mid-request.
type seriesLimits struct {
	maxNameLen, maxValueLen, maxLabels int
	creationGrace, pastGrace           time.Duration
	// minT/maxT are the accepted sample timestamp bounds in ms (inclusive);
	// math.MinInt64/MaxInt64 when unchecked.
	minT, maxT int64
}

func newSeriesLimits(o *validation.Overrides, tenant string, now time.Time) seriesLimits {
	l := seriesLimits{
		maxNameLen:    o.MaxLabelNameLength(tenant),
		maxValueLen:   o.MaxLabelValueLength(tenant),
		maxLabels:     o.MaxLabelNamesPerSeries(tenant),
		creationGrace: o.CreationGracePeriod(tenant),
		pastGrace:     o.PastGracePeriod(tenant),
		minT:          minInt64,
		maxT:          maxInt64,
	}
	if l.creationGrace > 0 {
		l.maxT = now.Add(l.creationGrace).UnixMilli()
	}
	if l.pastGrace > 0 {
		l.minT = now.Add(-l.pastGrace).UnixMilli()
	}
	return l
}

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

// labelsSorted reports whether label names are in non-decreasing order;
// equal neighbours are reported as duplicates by validateLabels.
func labelsSorted(ls []prompb.Label) bool {
	for i := 1; i < len(ls); i++ {
		if ls[i-1].Name > ls[i].Name {
			return false
		}
	}
	return true
}

// validateLabels normalises ls (drops empty values, which Prometheus treats as
// absent, and sorts by name, which TSDB and the series hash rely on) and
// checks it against the limits. It returns the normalised labels, and a reason
// and detail when the series must be refused.
func validateLabels(ls []prompb.Label, lim *seriesLimits) ([]prompb.Label, string, string) {
	// Drop empty-valued labels in place; they do not identify anything.
	out := ls[:0]
	for _, l := range ls {
		if l.Value != "" {
			out = append(out, l)
		}
	}
	ls = out
	if !labelsSorted(ls) {
		slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	}

	name := ""
	for _, l := range ls {
		if l.Name == model.MetricNameLabel {
			name = l.Value
			break
		}
	}
	if name == "" {
		return ls, ReasonMissingMetricName, "series has no metric name (__name__ label)"
	}
	if !model.UTF8Validation.IsValidMetricName(name) {
		return ls, ReasonInvalidMetricName, fmt.Sprintf("metric name %q is not valid UTF-8", truncate(name))
	}
	if lim.maxLabels > 0 && len(ls) > lim.maxLabels {
		return ls, ReasonMaxLabelNamesPerSeries, fmt.Sprintf("series has %d labels, more than the limit of %d", len(ls), lim.maxLabels)
	}
	for i, l := range ls {
		if !model.UTF8Validation.IsValidLabelName(l.Name) {
			return ls, ReasonInvalidLabelName, fmt.Sprintf("label name %q is not valid", truncate(l.Name))
		}
		if lim.maxNameLen > 0 && len(l.Name) > lim.maxNameLen {
			return ls, ReasonLabelNameTooLong, fmt.Sprintf("label name %q is %d bytes long, more than the limit of %d", truncate(l.Name), len(l.Name), lim.maxNameLen)
		}
		if lim.maxValueLen > 0 && len(l.Value) > lim.maxValueLen {
			return ls, ReasonLabelValueTooLong, fmt.Sprintf("value of label %q is %d bytes long, more than the limit of %d (value %q)", truncate(l.Name), len(l.Value), lim.maxValueLen, truncate(l.Value))
		}
		if !utf8.ValidString(l.Value) {
			return ls, ReasonInvalidLabelValue, fmt.Sprintf("value of label %q is not valid UTF-8", truncate(l.Name))
		}
		if i > 0 && ls[i-1].Name == l.Name {
			return ls, ReasonDuplicateLabelNames, fmt.Sprintf("label name %q appears more than once", truncate(l.Name))
		}
	}
	return ls, "", ""
}

// rejections aggregates refused data per (reason, series) so that a series
// with 1000 bad samples yields one message, not 1000.
type rejections struct {
	list  []Rejection
	index map[string]int
}

func (r *rejections) add(reason, series, detail string, samples, histograms, exemplars int) {
	key := reason + "\xff" + series
	if i, ok := r.index[key]; ok {
		r.list[i].Samples += samples
		r.list[i].Histograms += histograms
		r.list[i].Exemplars += exemplars
		return
	}
	if r.index == nil {
		r.index = map[string]int{}
	}
	r.index[key] = len(r.list)
	r.list = append(r.list, Rejection{
		Reason:     reason,
		Series:     series,
		Message:    rejectionMessage(reason, detail, series),
		Samples:    samples,
		Histograms: histograms,
		Exemplars:  exemplars,
	})
}

// validateRequest drops what breaks the limits from req in place and reports
// it. What remains is safe to send to the ingesters.
func validateRequest(req *prompb.WriteRequest, lim *seriesLimits, rej *rejections) {
	kept := req.Timeseries[:0]
	for _, ts := range req.Timeseries {
		var reason, detail string
		ts.Labels, reason, detail = validateLabels(ts.Labels, lim)
		if reason != "" {
			rej.add(reason, seriesString(ts.Labels), detail, len(ts.Samples), len(ts.Histograms), len(ts.Exemplars))
			continue
		}
		if lim.minT != minInt64 || lim.maxT != maxInt64 {
			filterSamplesByTime(&ts, lim, rej)
		}
		if len(ts.Exemplars) > 0 {
			filterExemplars(&ts, rej)
		}
		if len(ts.Samples) == 0 && len(ts.Histograms) == 0 && len(ts.Exemplars) == 0 {
			continue
		}
		kept = append(kept, ts)
	}
	// Clear the tail so dropped series do not pin memory through the backing array.
	clear(req.Timeseries[len(kept):])
	req.Timeseries = kept

	md := req.Metadata[:0]
	for _, m := range req.Metadata {
		if m.MetricFamilyName != "" {
			md = append(md, m)
		}
	}
	req.Metadata = md
}

func filterSamplesByTime(ts *prompb.TimeSeries, lim *seriesLimits, rej *rejections) {
	var future, past int
	var futureT, pastT int64
	samples := ts.Samples[:0]
	for _, s := range ts.Samples {
		switch {
		case s.Timestamp > lim.maxT:
			future++
			futureT = s.Timestamp
		case s.Timestamp < lim.minT:
			past++
			pastT = s.Timestamp
		default:
			samples = append(samples, s)
		}
	}
	ts.Samples = samples
	var hFuture, hPast int
	hists := ts.Histograms[:0]
	for _, h := range ts.Histograms {
		switch {
		case h.Timestamp > lim.maxT:
			hFuture++
			futureT = h.Timestamp
		case h.Timestamp < lim.minT:
			hPast++
			pastT = h.Timestamp
		default:
			hists = append(hists, h)
		}
	}
	ts.Histograms = hists
	if future+hFuture > 0 {
		t := time.UnixMilli(futureT).UTC()
		rej.add(ReasonTooFarInFuture, seriesString(ts.Labels),
			fmt.Sprintf("sample timestamp %s is more than %s in the future (limit)", t.Format(time.RFC3339Nano), lim.creationGrace),
			future, hFuture, 0)
	}
	if past+hPast > 0 {
		t := time.UnixMilli(pastT).UTC()
		rej.add(ReasonTooFarInPast, seriesString(ts.Labels),
			fmt.Sprintf("sample timestamp %s is more than %s in the past (limit)", t.Format(time.RFC3339Nano), lim.pastGrace),
			past, hPast, 0)
	}
}

// filterExemplars drops exemplars whose label set TSDB would refuse anyway
// (longer than exemplar.ExemplarMaxLabelSetLength runes), so one bad
// exemplar does not fail the whole series at the ingester.
func filterExemplars(ts *prompb.TimeSeries, rej *rejections) {
	kept := ts.Exemplars[:0]
	for _, e := range ts.Exemplars {
		n := 0
		for _, l := range e.Labels {
			n += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value)
		}
		if n > exemplar.ExemplarMaxLabelSetLength {
			rej.add(ReasonExemplarLabelsTooLong, seriesString(ts.Labels),
				fmt.Sprintf("exemplar label set is %d characters long, more than the limit of %d", n, exemplar.ExemplarMaxLabelSetLength), 0, 0, 1)
			continue
		}
		kept = append(kept, e)
	}
	ts.Exemplars = kept
}
