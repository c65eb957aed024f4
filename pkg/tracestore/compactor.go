package tracestore

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
)

// CompactorConfig configures trace block compaction and retention.
type CompactorConfig struct {
	Interval      time.Duration `yaml:"interval"`
	Retention     time.Duration `yaml:"retention"`
	Window        time.Duration `yaml:"window"`
	MaxBlockSpans int           `yaml:"max_block_spans"`
	DeletionDelay time.Duration `yaml:"deletion_delay"`
	RowGroupSpans int           `yaml:"row_group_spans"`
}

// RegisterFlags registers the trace compactor flags.
func (c *CompactorConfig) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.Interval, "traces.compaction-interval", 5*time.Minute, "How often the trace compactor runs.")
	f.DurationVar(&c.Retention, "traces.retention", 14*24*time.Hour, "Delete trace blocks whose newest span is older than this; 0 keeps them forever.")
	f.DurationVar(&c.Window, "traces.compaction-window", time.Hour, "Trace blocks whose earliest span falls in the same window are merged.")
	f.IntVar(&c.MaxBlockSpans, "traces.compaction.max-block-spans", 5_000_000, "Do not merge blocks into one holding more spans than this. The merge streams spans; memory is roughly the compressed inputs and output plus per-trace metadata.")
	f.DurationVar(&c.DeletionDelay, "traces.deletion-delay", 10*time.Minute, "Time between marking a trace block for deletion and deleting it; must exceed the queriers' block sync interval.")
	f.IntVar(&c.RowGroupSpans, "traces.compaction.row-group-spans", 4096, "Target spans per Parquet row group in compacted blocks.")
}

// Validate checks the config.
func (c *CompactorConfig) Validate() error {
	if c.Interval <= 0 {
		return errors.New("traces.compaction-interval: must be positive")
	}
	if c.Window <= 0 {
		return errors.New("traces.compaction-window: must be positive")
	}
	if c.Retention < 0 {
		return errors.New("traces.retention: must not be negative")
	}
	if c.MaxBlockSpans <= 0 {
		return errors.New("traces.compaction.max-block-spans: must be positive")
	}
	return nil
}

// deletionMark is written to <block>/deletion-mark.json and copied to
// <tenant>/traces/markers/<ULID>-deletion-mark.json (what readers list).
type deletionMark struct {
	ID           ulid.ULID `json:"id"`
	DeletionTime int64     `json:"deletion_time"` // unix seconds
	Reason       string    `json:"reason"`
	Version      int       `json:"version"`
}

// TraceCompactor merges small trace blocks, deduplicates replicated spans and
// applies retention, for every tenant in the bucket.
type TraceCompactor struct {
	services.Service
	cfg    CompactorConfig
	bkt    objstore.Bucket
	logger *slog.Logger
	now    func() time.Time

	// metas caches meta.json of blocks seen (immutable once written), so a
	// pass costs one listing instead of a read per block.
	metasMu sync.Mutex
	metas   map[ulid.ULID]*BlockMeta

	compactions prometheus.Counter
	deleted     prometheus.Counter
	failures    prometheus.Counter
}

// NewTraceCompactor builds the compactor; bkt is the root bucket.
func NewTraceCompactor(cfg CompactorConfig, bkt objstore.Bucket, logger *slog.Logger, reg prometheus.Registerer) (*TraceCompactor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &TraceCompactor{
		cfg: cfg, bkt: bkt, logger: logger, now: time.Now,
		metas: map[ulid.ULID]*BlockMeta{},
		compactions: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "vigil_trace_compactor_compactions_total", Help: "Trace block merges completed.",
		}),
		deleted: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "vigil_trace_compactor_blocks_deleted_total", Help: "Trace blocks deleted (compacted or past retention).",
		}),
		failures: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "vigil_trace_compactor_failures_total", Help: "Failed trace compaction passes of a tenant.",
		}),
	}
	c.Service = services.NewTimerService(cfg.Interval, nil, c.iteration, nil)
	return c, nil
}

func (c *TraceCompactor) iteration(ctx context.Context) error {
	// A failing tenant must not stop the service; it is retried next time.
	_ = c.RunOnce(ctx)
	return nil
}

// RunOnce runs one pass over every tenant.
func (c *TraceCompactor) RunOnce(ctx context.Context) error {
	var tenants []string
	err := c.bkt.Iter(ctx, "", func(name string) error {
		if strings.HasSuffix(name, "/") {
			t := strings.TrimSuffix(name, "/")
			if validateTenant(t) == nil {
				tenants = append(tenants, t)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	var errs []error
	for _, t := range tenants {
		if err := c.CompactTenant(ctx, t); err != nil {
			c.failures.Inc()
			c.logger.Error("trace compaction failed", "tenant", t, "err", err)
			errs = append(errs, fmt.Errorf("tenant %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

type blockState struct {
	id     ulid.ULID
	meta   *BlockMeta // nil: incomplete upload
	marked *deletionMark
}

func (c *TraceCompactor) listBlocks(ctx context.Context, tenant string, bkt objstore.Bucket) ([]*blockState, error) {
	marks := map[ulid.ULID]*deletionMark{}
	seen := map[ulid.ULID]bool{}
	err := bkt.Iter(ctx, path.Join(tracesDir, "markers")+"/", func(name string) error {
		b, err := readObject(ctx, bkt, name)
		if err != nil {
			return err
		}
		var m deletionMark
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("decode %s: %w", name, err)
		}
		marks[m.ID] = &m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list deletion marks: %w", err)
	}
	var out []*blockState
	err = bkt.Iter(ctx, tracesDir+"/", func(name string) error {
		id, err := ulid.Parse(path.Base(strings.TrimSuffix(name, "/")))
		if err != nil {
			return nil
		}
		st := &blockState{id: id, marked: marks[id]}
		seen[id] = true
		c.metasMu.Lock()
		st.meta = c.metas[id]
		c.metasMu.Unlock()
		if st.meta != nil {
			out = append(out, st)
			return nil
		}
		m, err := readMeta(ctx, bkt, id)
		switch {
		case err == nil:
			st.meta = m
			c.metasMu.Lock()
			c.metas[id] = m
			c.metasMu.Unlock()
		case isNotFound(bkt, err):
		default:
			return err
		}
		out = append(out, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list trace blocks: %w", err)
	}
	// Forget deleted blocks. ULIDs are unique across tenants, so one map
	// serves every tenant; only this tenant's entries are pruned.
	c.metasMu.Lock()
	for id, m := range c.metas {
		if m.Tenant == tenant && !seen[id] {
			delete(c.metas, id)
		}
	}
	c.metasMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id.Compare(out[j].id) < 0 })
	return out, nil
}

// CompactTenant runs one compaction, retention and deletion pass for a tenant.
func (c *TraceCompactor) CompactTenant(ctx context.Context, tenant string) error {
	bkt := bucket.ForTenant(c.bkt, tenant)
	blocks, err := c.listBlocks(ctx, tenant, bkt)
	if err != nil {
		return err
	}
	now := c.now()
	var live []*blockState
	for _, b := range blocks {
		switch {
		case b.marked != nil:
			if now.Sub(time.Unix(b.marked.DeletionTime, 0)) >= c.cfg.DeletionDelay {
				if err := c.deleteBlock(ctx, bkt, b.id); err != nil {
					return err
				}
			}
		case b.meta == nil:
			// An upload that never finished (its meta.json is missing).
			// Give in-flight uploads plenty of time before cleaning up.
			if now.Sub(ulid.Time(b.id.Time())) > 2*c.cfg.DeletionDelay+time.Hour {
				if err := c.deleteBlock(ctx, bkt, b.id); err != nil {
					return err
				}
			}
		case c.cfg.Retention > 0 && now.Sub(time.Unix(0, b.meta.MaxTime)) > c.cfg.Retention:
			if err := c.markDeleted(ctx, bkt, b.id, "retention"); err != nil {
				return err
			}
		default:
			live = append(live, b)
		}
	}
	return c.compactGroups(ctx, tenant, bkt, live)
}

func (c *TraceCompactor) compactGroups(ctx context.Context, tenant string, bkt objstore.Bucket, live []*blockState) error {
	groups := map[int64][]*blockState{}
	var keys []int64
	for _, b := range live {
		w := b.meta.MinTime / int64(c.cfg.Window)
		if _, ok := groups[w]; !ok {
			keys = append(keys, w)
		}
		groups[w] = append(groups[w], b)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		var batch []*blockState
		spans := 0
		for _, b := range groups[k] {
			if b.meta.Spans >= c.cfg.MaxBlockSpans {
				continue // already full size
			}
			if spans+b.meta.Spans > c.cfg.MaxBlockSpans && len(batch) >= 2 {
				break
			}
			batch = append(batch, b)
			spans += b.meta.Spans
		}
		if len(batch) < 2 {
			continue
		}
		if err := c.merge(ctx, tenant, bkt, batch); err != nil {
			return err
		}
	}
	return nil
}

// merge writes one block with the deduplicated spans of batch, then marks
// the inputs for deletion. A crash in between leaves duplicates that readers
// deduplicate and the next pass merges again.
func (c *TraceCompactor) merge(ctx context.Context, tenant string, bkt objstore.Bucket, batch []*blockState) error {
	level := 0
	srcSet := map[ulid.ULID]bool{}
	cursors := make(cursorHeap, 0, len(batch))
	for _, b := range batch {
		// Only the compressed data files are held in memory; spans are
		// decoded a batch at a time by the cursors.
		data, err := readObject(ctx, bkt, path.Join(tracesDir, b.id.String(), blockDataFile))
		if err != nil {
			return err
		}
		cur := newSpanCursor(data)
		if cur.fill() {
			cursors = append(cursors, cur)
		} else if cur.err != nil {
			return fmt.Errorf("block %s: %w", b.id, cur.err)
		}
		if b.meta.Level > level {
			level = b.meta.Level
		}
		if len(b.meta.Sources) == 0 {
			srcSet[b.id] = true
		}
		for _, s := range b.meta.Sources {
			srcSet[s] = true
		}
	}
	sources := make([]ulid.ULID, 0, len(srcSet))
	for s := range srcSet {
		sources = append(sources, s)
	}
	sort.Slice(sources, func(i, j int) bool { return sources[i].Compare(sources[j]) < 0 })
	id := ulid.MustNew(ulid.Timestamp(c.now()), ulid.DefaultEntropy())
	bb := newBlockBuilder(id, tenant, c.cfg.RowGroupSpans, level+1, sources)

	// K-way merge in block order (trace ID, start, span ID); each trace is
	// deduplicated (replicas) as a whole before it is written.
	heap.Init(&cursors)
	var trace []spanRow
	in := 0
	flush := func() error {
		if len(trace) == 0 {
			return nil
		}
		err := bb.addTrace(dedupSorted(trace))
		clear(trace)
		trace = trace[:0]
		return err
	}
	for cursors.Len() > 0 {
		cur := cursors[0]
		r := cur.buf[cur.pos]
		cur.pos++
		in++
		if len(trace) > 0 && trace[0].TraceID != r.TraceID {
			if err := flush(); err != nil {
				return err
			}
		}
		trace = append(trace, r)
		if cur.fill() {
			heap.Fix(&cursors, 0)
		} else {
			if cur.err != nil {
				return fmt.Errorf("merge blocks: %w", cur.err)
			}
			heap.Pop(&cursors)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	built, err := bb.finish()
	if err != nil {
		return fmt.Errorf("build compacted block: %w", err)
	}
	if err := uploadBlock(ctx, bkt, built); err != nil {
		return err
	}
	for _, b := range batch {
		if err := c.markDeleted(ctx, bkt, b.id, "compacted into "+id.String()); err != nil {
			return err
		}
	}
	c.compactions.Inc()
	c.logger.Info("compacted trace blocks", "tenant", tenant, "block", id, "inputs", len(batch), "spans_in", in, "spans_out", built.meta.Spans)
	return nil
}

// spanCursor reads a data file's spans in order, a batch at a time.
type spanCursor struct {
	rd     *parquet.GenericReader[spanRow]
	buf    []spanRow
	pos, n int
	err    error
}

func newSpanCursor(data []byte) *spanCursor {
	return &spanCursor{rd: parquet.NewGenericReader[spanRow](bytes.NewReader(data)), buf: make([]spanRow, 1024)}
}

// fill makes buf[pos] the next span; false at the end or on error (err).
func (c *spanCursor) fill() bool {
	if c.pos < c.n {
		return true
	}
	// Zeroed rows make the reader allocate fresh blobs instead of reusing
	// memory that spans already handed out still point to.
	clear(c.buf)
	n, err := c.rd.Read(c.buf)
	c.pos, c.n = 0, n
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = fmt.Errorf("decode spans: %w", err)
		return false
	}
	if n == 0 {
		_ = c.rd.Close()
		return false
	}
	return true
}

// cursorHeap orders cursors by their current span.
type cursorHeap []*spanCursor

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	return rowLess(&h[i].buf[h[i].pos], &h[j].buf[h[j].pos])
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*spanCursor)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (c *TraceCompactor) markDeleted(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, reason string) error {
	b, err := json.Marshal(deletionMark{ID: id, DeletionTime: c.now().Unix(), Reason: reason, Version: 1})
	if err != nil {
		return fmt.Errorf("encode deletion mark: %w", err)
	}
	if err := bkt.Upload(ctx, path.Join(tracesDir, id.String(), blockDeletionMark), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("mark block %s deleted: %w", id, err)
	}
	if err := bkt.Upload(ctx, markerPath(id), bytes.NewReader(b)); err != nil {
		return fmt.Errorf("mark block %s deleted: %w", id, err)
	}
	return nil
}

// deleteBlock removes meta.json first so a half-deleted block is never seen
// as complete, then the other files, then the marker copy.
func (c *TraceCompactor) deleteBlock(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) error {
	dir := path.Join(tracesDir, id.String())
	if err := bkt.Delete(ctx, path.Join(dir, blockMetaFile)); err != nil && !isNotFound(bkt, err) {
		return fmt.Errorf("delete block %s: %w", id, err)
	}
	var names []string
	if err := bkt.Iter(ctx, dir+"/", func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return fmt.Errorf("list block %s: %w", id, err)
	}
	for _, n := range names {
		if err := bkt.Delete(ctx, n); err != nil && !isNotFound(bkt, err) {
			return fmt.Errorf("delete %s: %w", n, err)
		}
	}
	if err := bkt.Delete(ctx, markerPath(id)); err != nil && !isNotFound(bkt, err) {
		return fmt.Errorf("delete marker of %s: %w", id, err)
	}
	c.deleted.Inc()
	return nil
}
