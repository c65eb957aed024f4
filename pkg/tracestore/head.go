package tracestore

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Limits are the per-tenant limits the trace head enforces. The consumer
// (this package) declares the interface; pkg/util/validation's overrides or
// StaticLimits implement it. Zero means unlimited.
type Limits interface {
	MaxSpansPerTrace(tenant string) int
	MaxBytesPerTrace(tenant string) int
}

// StaticLimits returns Limits with the same values for every tenant.
func StaticLimits(maxSpansPerTrace, maxBytesPerTrace int) Limits {
	return staticLimits{maxSpansPerTrace, maxBytesPerTrace}
}

type staticLimits struct{ spans, bytes int }

func (l staticLimits) MaxSpansPerTrace(string) int { return l.spans }
func (l staticLimits) MaxBytesPerTrace(string) int { return l.bytes }

// Discard reasons, used in error details and metrics.
const (
	ReasonMaxSpansPerTrace = "max_spans_per_trace"
	ReasonTraceTooLarge    = "trace_too_large"
)

// liveTrace is one trace in a head block.
type liveTrace struct {
	rows       []spanRow
	bytes      int
	lastAppend time.Time
}

// headBlock is the in-memory content that will become one bucket block.
type headBlock struct {
	traces  map[TraceID]*liveTrace
	bytes   int64
	spans   int
	created time.Time
	minT    int64 // unix nanos of the earliest span start
	maxT    int64 // unix nanos of the latest span end
	// lastSeg is the newest WAL segment holding data of this block; set when
	// the block is frozen.
	lastSeg int
	// flushedAt is set once the block is in the bucket.
	flushedAt time.Time
}

func newHeadBlock(now time.Time) *headBlock {
	return &headBlock{traces: map[TraceID]*liveTrace{}, created: now}
}

func (h *headBlock) add(id TraceID, rows []spanRow, bytes int, now time.Time) {
	t := h.traces[id]
	if t == nil {
		t = &liveTrace{}
		h.traces[id] = t
	}
	t.rows = append(t.rows, rows...)
	t.bytes += bytes
	t.lastAppend = now
	h.bytes += int64(bytes)
	h.spans += len(rows)
	for i := range rows {
		if h.minT == 0 || rows[i].StartUnixNano < h.minT {
			h.minT = rows[i].StartUnixNano
		}
		if e := rows[i].endUnixNano(); e > h.maxT {
			h.maxT = e
		}
	}
}

// rowsByTrace groups rows by trace ID and computes their encoded sizes.
func rowsByTrace(rows []spanRow) (map[TraceID][]spanRow, map[TraceID]int) {
	byTrace := map[TraceID][]spanRow{}
	sizes := map[TraceID]int{}
	for _, r := range rows {
		id := TraceID(r.TraceID)
		byTrace[id] = append(byTrace[id], r)
		sizes[id] += r.size()
	}
	return byTrace, sizes
}

// tenantHead is the trace head of one tenant: the block being filled, blocks
// being flushed (still queryable), and the WAL.
type tenantHead struct {
	tenant string

	// cutMu orders pushes against cuts: a push holds it shared across its WAL
	// append and in-memory insert so both land on the same side of a cut.
	cutMu sync.RWMutex

	mu       sync.Mutex
	cur      *headBlock
	flushing []*headBlock // frozen, upload pending
	flushed  []*headBlock // uploaded, kept queryable until queriers see the block

	wal *wal
	// flushMu serialises cut+upload per tenant.
	flushMu sync.Mutex
}

// rejection describes spans dropped by a limit.
type rejection struct {
	reason string
	spans  int
	trace  TraceID
	detail string
}

// admit checks limits and inserts the accepted traces into the current head
// block. It returns the traces that were rejected.
func (t *tenantHead) admit(rows []spanRow, limits Limits, now time.Time) (accepted map[TraceID]bool, rejected []rejection) {
	byTrace, sizes := rowsByTrace(rows)
	maxSpans := limits.MaxSpansPerTrace(t.tenant)
	maxBytes := limits.MaxBytesPerTrace(t.tenant)
	accepted = make(map[TraceID]bool, len(byTrace))
	t.mu.Lock()
	defer t.mu.Unlock()
	// Iterate in sorted order so rejections are reported deterministically.
	ids := make([]TraceID, 0, len(byTrace))
	for id := range byTrace {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return compareBytes(ids[i][:], ids[j][:]) < 0 })
	for _, id := range ids {
		trs := byTrace[id]
		var haveSpans, haveBytes int
		if lt := t.cur.traces[id]; lt != nil {
			haveSpans, haveBytes = len(lt.rows), lt.bytes
		}
		switch {
		case maxSpans > 0 && haveSpans+len(trs) > maxSpans:
			rejected = append(rejected, rejection{ReasonMaxSpansPerTrace, len(trs), id,
				fmt.Sprintf("trace %s would have %d spans, limit is %d", id, haveSpans+len(trs), maxSpans)})
			continue
		case maxBytes > 0 && haveBytes+sizes[id] > maxBytes:
			rejected = append(rejected, rejection{ReasonTraceTooLarge, len(trs), id,
				fmt.Sprintf("trace %s would have %d bytes, limit is %d", id, haveBytes+sizes[id], maxBytes)})
			continue
		}
		t.cur.add(id, trs, sizes[id], now)
		accepted[id] = true
	}
	return accepted, rejected
}

// replay inserts rows without limits: they were accepted before the restart.
// seen tracks the span IDs replayed so far: a crash between re-logging
// carried traces and deleting the old segments leaves those spans in the WAL
// twice, and head search counts spans without deduplicating.
func (t *tenantHead) replay(rows []spanRow, now time.Time, seen map[TraceID]map[[8]byte]struct{}) {
	kept := rows[:0]
	for _, r := range rows {
		id := TraceID(r.TraceID)
		ids := seen[id]
		if ids == nil {
			ids = map[[8]byte]struct{}{}
			seen[id] = ids
		}
		if _, dup := ids[r.SpanID]; dup {
			continue
		}
		ids[r.SpanID] = struct{}{}
		kept = append(kept, r)
	}
	byTrace, sizes := rowsByTrace(kept)
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, trs := range byTrace {
		t.cur.add(id, trs, sizes[id], now)
	}
}

// dropFlushed forgets uploaded blocks flushed before cutoff.
func (t *tenantHead) dropFlushed(cutoff time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keep := t.flushed[:0]
	for _, b := range t.flushed {
		if b.flushedAt.After(cutoff) {
			keep = append(keep, b)
		}
	}
	clear(t.flushed[len(keep):])
	t.flushed = keep
}

// snapshot copies, per trace, the row slices of every head block that
// overlaps [start, end]. Rows are never mutated after insertion and appends
// never touch elements below the captured length, so the copies of the slice
// headers are safe to read without the lock.
func (t *tenantHead) snapshot(start, end time.Time, only *TraceID) map[TraceID][]spanRow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[TraceID][]spanRow{}
	visit := func(h *headBlock) {
		if h.spans == 0 || !overlapsNanos(h.minT, h.maxT, start, end) {
			return
		}
		if only != nil {
			if lt := h.traces[*only]; lt != nil {
				out[*only] = append(out[*only], lt.rows...)
			}
			return
		}
		for id, lt := range h.traces {
			if cur, ok := out[id]; ok {
				out[id] = append(cur[:len(cur):len(cur)], lt.rows...)
			} else {
				out[id] = lt.rows[:len(lt.rows):len(lt.rows)]
			}
		}
	}
	for _, h := range t.flushed {
		visit(h)
	}
	for _, h := range t.flushing {
		visit(h)
	}
	visit(t.cur)
	return out
}

// headTrace returns the deduplicated, sorted rows of one trace.
func (t *tenantHead) headTrace(id TraceID, start, end time.Time) []spanRow {
	rows := t.snapshot(start, end, &id)[id]
	if len(rows) == 0 {
		return nil
	}
	cp := append([]spanRow(nil), rows...)
	sortRows(cp)
	return dedupSorted(cp)
}

// rowsToTracesChecked converts rows and wraps errors with the trace ID.
func rowsToTracesChecked(id TraceID, rows []spanRow) (ptrace.Traces, error) {
	td, err := rowsToTraces(rows)
	if err != nil {
		return td, fmt.Errorf("rebuild trace %s: %w", id, err)
	}
	return td, nil
}
