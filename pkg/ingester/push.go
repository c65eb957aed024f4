package ingester

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

var _ client.IngesterServer = (*Ingester)(nil)

// Push appends a write request to the tenant's TSDB (tenant from ctx). Per-series
// problems become rejections in the response while everything else is committed; an
// error means nothing was acknowledged. It returns only after the batch is in the WAL
// (and fsynced with -ingester.wal-fsync-on-push) and, when it changed metric metadata,
// after the change is fsynced to MetadataFile.
func (i *Ingester) Push(ctx context.Context, req *prompb.WriteRequest) (*client.PushResponse, error) {
	if s := i.State(); s != services.Running {
		return nil, status.Errorf(codes.Unavailable, "ingester is %s, not running", s)
	}
	tenantID, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "push: no tenant in request: %v", err)
	}
	if err := tenant.Validate(tenantID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "push: invalid tenant: %v", err)
	}
	for attempt := 0; ; attempt++ {
		u, err := i.getOrCreateTSDB(tenantID)
		if err != nil {
			i.metrics.pushFailures.Inc()
			if errors.Is(err, errStopping) {
				return nil, status.Errorf(codes.Unavailable, "push for tenant %q: %v", tenantID, err)
			}
			// Opening a TSDB fails on disk problems: retryable from the sender's view.
			return nil, status.Errorf(codes.Internal, "push for tenant %q: %v", tenantID, err)
		}
		resp, retry, err := i.pushToTSDB(ctx, u, req)
		if retry && attempt < 3 {
			continue // the TSDB was closed as idle between lookup and lock
		}
		if err != nil {
			i.metrics.pushFailures.Inc()
			return nil, err
		}
		return resp, nil
	}
}

// rejectionKey groups rejections per series and reason.
type rejectionKey struct {
	series int
	reason string
}

type pushState struct {
	resp     client.PushResponse
	index    map[rejectionKey]int
	maxRejs  int
	overflow map[string]*client.Rejection
}

func (p *pushState) reject(seriesIdx int, lset labels.Labels, reason string, err error, n int64) {
	if n == 0 {
		return
	}
	k := rejectionKey{series: seriesIdx, reason: reason}
	if idx, ok := p.index[k]; ok {
		p.resp.Rejections[idx].Count += n
		return
	}
	if len(p.resp.Rejections) >= p.maxRejs {
		// Keep the response bounded; totals per reason stay exact.
		o := p.overflow[reason]
		if o == nil {
			o = &client.Rejection{Reason: reason, Message: "further series rejected for the same reason: " + err.Error()}
			p.overflow[reason] = o
		}
		o.Count += n
		return
	}
	p.index[k] = len(p.resp.Rejections)
	p.resp.Rejections = append(p.resp.Rejections, client.Rejection{
		Reason:  reason,
		Series:  lset.String(),
		Message: err.Error(),
		Count:   n,
	})
}

func (i *Ingester) pushToTSDB(ctx context.Context, u *userTSDB, req *prompb.WriteRequest) (*client.PushResponse, bool, error) {
	u.flushMu.RLock()
	defer u.flushMu.RUnlock()
	if u.closed {
		return nil, true, status.Errorf(codes.Unavailable, "TSDB of tenant %q is closed", u.tenant)
	}

	st := pushState{
		index:    map[rejectionKey]int{},
		maxRejs:  i.cfg.MaxRejections,
		overflow: map[string]*client.Rejection{},
	}
	app := u.db.Appender(ctx)
	seen := getBatchSeries(len(req.Timeseries))
	defer putBatchSeries(seen)
	var (
		samples, hists, exemplars int64
		builder                   = labels.NewScratchBuilder(16)
		exBuilder                 = labels.NewScratchBuilder(2)
	)
	lookupsBuf := getRefLookups(len(req.Timeseries))
	defer putRefLookups(lookupsBuf)
	lookups := *lookupsBuf
	refsChanged := u.refs.lookup(req.Timeseries, lookups)
	for sIdx := range req.Timeseries {
		ts := &req.Timeseries[sIdx]
		// A series the head already has is appended by reference with the labels the
		// head holds; only unknown series need labels built from the request.
		cached := &lookups[sIdx]
		lset, cachedRef := cached.lset, cached.ref
		if cachedRef == 0 {
			builder.Reset()
			for _, l := range ts.Labels {
				// In Prometheus a label with an empty value is the same as no label;
				// storing it would make {x=""} and {} different series.
				if l.Value == "" {
					continue
				}
				builder.Add(ownString(l.Name), ownString(l.Value))
			}
			// Remote-write senders should sort labels, but the TSDB silently misbehaves
			// if they do not, so sort (cheap when already sorted). Labels copies the
			// strings: request labels may alias a receive buffer.
			builder.Sort()
			lset = builder.Labels()
			if lset.IsEmpty() {
				st.reject(sIdx, lset, client.ReasonInvalidSeries, errors.New("series has no labels"), int64(len(ts.Samples)+len(ts.Histograms)+len(ts.Exemplars)))
				continue
			}
		}

		// The TSDB checks order only against committed samples and silently drops, at
		// Commit, samples that are out of order within the same batch. So order within
		// the request is handled here: samples are sorted per series, and a series sent
		// twice in one request is checked against what this request already appended.
		samplesSorted, histsSorted := sortSamples(ts.Samples), sortHistograms(ts.Histograms)
		prev := seen.get(lset)

		ref := cachedRef
		limited := false
		for j, s := range samplesSorted {
			if s.Timestamp <= prev.floatT {
				if s.Timestamp == prev.floatT && math.Float64bits(s.Value) == math.Float64bits(prev.floatV) {
					samples++ // identical resend: already stored, as Prometheus treats it
					continue
				}
				reason, msg := client.ReasonOutOfOrder, "older than another sample of the same series in this request"
				if s.Timestamp == prev.floatT {
					reason, msg = client.ReasonDuplicateSample, "another sample of the same series in this request has this timestamp and a different value"
				}
				st.reject(sIdx, lset, reason, fmt.Errorf("sample at %s: %s", fmtTS(s.Timestamp), msg), 1)
				continue
			}
			r, err := app.Append(ref, lset, s.Timestamp, s.Value)
			if err == nil {
				ref = r
				samples++
				prev.floatT, prev.floatV = s.Timestamp, s.Value
				continue
			}
			reason, isLimit := classifyAppendError(err)
			if isLimit {
				// The series could not be created: nothing of it can be stored.
				st.reject(sIdx, lset, reason, err, int64(len(ts.Samples)-j+len(ts.Histograms)+len(ts.Exemplars)))
				limited = true
				break
			}
			st.reject(sIdx, lset, reason, fmt.Errorf("sample at %s: %w", fmtTS(s.Timestamp), err), 1)
		}
		if limited {
			continue
		}
		for j := range histsSorted {
			h := &histsSorted[j]
			if h.Timestamp <= prev.histT {
				reason, msg := client.ReasonOutOfOrder, "older than another histogram of the same series in this request"
				if h.Timestamp == prev.histT {
					reason, msg = client.ReasonDuplicateSample, "another histogram of the same series in this request has this timestamp"
				}
				st.reject(sIdx, lset, reason, fmt.Errorf("histogram at %s: %s", fmtTS(h.Timestamp), msg), 1)
				continue
			}
			var (
				r   storage.SeriesRef
				err error
			)
			if h.IsFloatHistogram() {
				r, err = app.AppendHistogram(ref, lset, h.Timestamp, nil, h.ToFloatHistogram())
			} else {
				r, err = app.AppendHistogram(ref, lset, h.Timestamp, h.ToIntHistogram(), nil)
			}
			if err == nil {
				ref = r
				hists++
				prev.histT = h.Timestamp
				continue
			}
			reason, isLimit := classifyAppendError(err)
			if isLimit {
				st.reject(sIdx, lset, reason, err, int64(len(ts.Histograms)-j+len(ts.Exemplars)))
				limited = true
				break
			}
			st.reject(sIdx, lset, reason, fmt.Errorf("histogram at %s: %w", fmtTS(h.Timestamp), err), 1)
		}
		if ref != 0 && ref != cachedRef {
			cached.newRef, cached.newLset = ref, lset
			refsChanged = true
		}
		if limited {
			continue
		}
		if i.cfg.MaxExemplars <= 0 {
			// Exemplar storage is switched off by configuration: the exemplars are not
			// stored and therefore not counted as written.
			continue
		}
		for _, e := range ts.Exemplars {
			ex := exemplar.Exemplar{
				Labels: prompbLabels(&exBuilder, e.Labels),
				Value:  e.Value,
				Ts:     e.Timestamp,
				HasTs:  true,
			}
			// ref may be 0 (every sample of this entry rejected or an identical resend):
			// the head then finds the series by its labels, if it exists.
			if _, err := app.AppendExemplar(ref, lset, ex); err != nil {
				reason := classifyExemplarError(err)
				if ref == 0 && reason == client.ReasonInvalidExemplar {
					err = fmt.Errorf("no sample of its series is stored: %w", err)
				}
				st.reject(sIdx, lset, reason, fmt.Errorf("exemplar at %s: %w", fmtTS(e.Timestamp), err), 1)
				continue
			}
			exemplars++
		}
	}
	if refsChanged {
		// Also after a failed commit: the series were created in the head anyway.
		u.refs.update(lookups)
	}
	if err := app.Commit(); err != nil {
		// Nothing of this request is acknowledged; the sender retries.
		return nil, false, status.Errorf(codes.Internal, "commit to WAL of tenant %q: %v", u.tenant, err)
	}
	if i.cfg.WALFsyncOnPush {
		if err := u.syncWAL(); err != nil {
			return nil, false, status.Errorf(codes.Internal, "fsync WAL of tenant %q: %v", u.tenant, err)
		}
	}
	if v := u.setMetadata(req.Metadata); v != 0 {
		// Changed metadata is acknowledged only once it is on disk. If saving fails the
		// sender retries; the retried samples are identical resends and count as written.
		if err := u.saveMetadataVersion(v); err != nil {
			return nil, false, status.Errorf(codes.Internal, "persist metric metadata of tenant %q: %v", u.tenant, err)
		}
	}
	u.lastWrite.Store(time.Now().UnixNano())

	st.resp.SamplesWritten = samples
	st.resp.HistogramsWritten = hists
	st.resp.ExemplarsWritten = exemplars
	st.resp.MetadataWritten = int64(len(req.Metadata))
	reasons := make([]string, 0, len(st.overflow))
	for r := range st.overflow {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		st.resp.Rejections = append(st.resp.Rejections, *st.overflow[r])
	}
	i.metrics.samplesAppended.Add(float64(samples))
	i.metrics.histogramsAppended.Add(float64(hists))
	i.metrics.exemplarsAppended.Add(float64(exemplars))
	for _, r := range st.resp.Rejections {
		i.metrics.rejected.WithLabelValues(r.Reason).Add(float64(r.Count))
	}
	return &st.resp, false, nil
}

// classifyAppendError maps a TSDB append error to a rejection reason; isLimit is true
// when the series itself could not be created.
func classifyAppendError(err error) (reason string, isLimit bool) {
	var limitErr *seriesLimitError
	switch {
	case errors.As(err, &limitErr):
		return limitErr.reason, true
	case errors.Is(err, storage.ErrOutOfOrderSample):
		return client.ReasonOutOfOrder, false
	case errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrTooOldSample):
		return client.ReasonTooOld, false
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return client.ReasonDuplicateSample, false
	case isHistogramError(err):
		return client.ReasonInvalidHistogram, false
	default:
		return client.ReasonInvalidSeries, false
	}
}

func isHistogramError(err error) bool {
	var he histogram.Error
	return errors.As(err, &he) || errors.Is(err, storage.ErrNativeHistogramsDisabled)
}

func classifyExemplarError(err error) string {
	switch {
	case errors.Is(err, storage.ErrOutOfOrderExemplar):
		return client.ReasonOutOfOrderExemplar
	case errors.Is(err, storage.ErrDuplicateExemplar):
		return client.ReasonDuplicateExemplar
	default:
		return client.ReasonInvalidExemplar
	}
}

func prompbLabels(b *labels.ScratchBuilder, ls []prompb.Label) labels.Labels {
	b.Reset()
	for _, l := range ls {
		b.Add(ownString(l.Name), ownString(l.Value))
	}
	b.Sort()
	return b.Labels()
}

func fmtTS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// batchSeries remembers, per series, the newest float and histogram timestamps appended
// by the current request, so a series repeated within one request is order-checked.
// Entries live in one slice (two allocations per request, not one per series).
type batchSeries struct {
	byHash  map[uint64]int32
	entries []batchEntry
}

type batchEntry struct {
	lset   labels.Labels
	floatT int64
	floatV float64
	histT  int64
	next   int32 // index of the next entry with the same hash, or -1
}

func newBatchSeries(n int) *batchSeries {
	return &batchSeries{byHash: make(map[uint64]int32, n), entries: make([]batchEntry, 0, n)}
}

// batchSeriesPool reuses batchSeries across pushes (a map and a slice sized for a whole
// request, which otherwise are garbage after every push).
var batchSeriesPool sync.Pool

func getBatchSeries(n int) *batchSeries {
	if b, ok := batchSeriesPool.Get().(*batchSeries); ok {
		return b
	}
	return newBatchSeries(n)
}

func putBatchSeries(b *batchSeries) {
	if len(b.entries) > 1<<16 {
		return // unusually large request: do not keep its memory around
	}
	clear(b.byHash)
	clear(b.entries) // drop label references
	b.entries = b.entries[:0]
	batchSeriesPool.Put(b)
}

// get returns the entry of lset; the pointer is valid until the next get.
func (b *batchSeries) get(lset labels.Labels) *batchEntry {
	h := lset.Hash()
	first, ok := b.byHash[h]
	if !ok {
		first = -1
	}
	for i := first; i >= 0; i = b.entries[i].next {
		if labels.Equal(b.entries[i].lset, lset) {
			return &b.entries[i]
		}
	}
	b.entries = append(b.entries, batchEntry{lset: lset, floatT: math.MinInt64, histT: math.MinInt64, next: first})
	idx := int32(len(b.entries) - 1)
	b.byHash[h] = idx
	return &b.entries[idx]
}

// sortSamples returns s sorted by timestamp. Unsorted input is sorted in a copy: with
// the in-process Push (client.RegisterLocal) the backing array may be shared with
// the pushes to other replicas running concurrently.
func sortSamples(s []prompb.Sample) []prompb.Sample {
	cmp := func(a, b prompb.Sample) int { return cmpInt64(a.Timestamp, b.Timestamp) }
	if slices.IsSortedFunc(s, cmp) {
		return s
	}
	s = slices.Clone(s)
	slices.SortStableFunc(s, cmp)
	return s
}

func sortHistograms(h []prompb.Histogram) []prompb.Histogram {
	cmp := func(a, b prompb.Histogram) int { return cmpInt64(a.Timestamp, b.Timestamp) }
	if slices.IsSortedFunc(h, cmp) {
		return h
	}
	h = slices.Clone(h)
	slices.SortStableFunc(h, cmp)
	return h
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
