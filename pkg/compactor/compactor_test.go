package compactor

import (
	"context"
	"errors"
	"io"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"github.com/thanos-io/thanos/pkg/block/metadata"

	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
)

const (
	hour    = int64(time.Hour / time.Millisecond)
	tenantA = "team-a"
	// samplesPerBlock is one 2h block of one series scraped every 15s.
	samplesPerBlock = 480
)

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Copy() chunks.Sample           { return s }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }

// testSeries are the series every replica of a 2h block holds.
func testSeries() []labels.Labels {
	return []labels.Labels{
		labels.FromStrings("__name__", "up", "job", "api"),
		labels.FromStrings("__name__", "up", "job", "db"),
	}
}

// value is the deterministic value of series i at t, the same in every replica.
func value(i int, t int64) float64 { return float64(i*1_000_000) + float64(t/15_000) }

// blockSeries returns the series of the 2h block starting at start.
func blockSeries(start int64) []storage.Series {
	var out []storage.Series
	for i, lset := range testSeries() {
		samples := make([]chunks.Sample, 0, samplesPerBlock)
		for j := range samplesPerBlock {
			t := start + int64(j)*15_000
			samples = append(samples, sample{t: t, f: value(i, t)})
		}
		out = append(out, storage.NewListSeries(lset, samples))
	}
	return out
}

type harness struct {
	t   *testing.T
	bkt objstore.Bucket
	c   *Compactor
	reg *prometheus.Registry
	now time.Time
}

func newHarness(t *testing.T, bkt objstore.Bucket, cfgFn func(*Config)) *harness {
	t.Helper()
	if bkt == nil {
		var err error
		if bkt, err = filesystem.NewBucket(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		DataDir:            t.TempDir(),
		CompactionInterval: time.Hour,
		BlockRanges:        DurationList{2 * time.Hour, 12 * time.Hour, 24 * time.Hour},
		WindowCloseDelay:   3 * time.Hour,
		DeletionDelay:      12 * time.Hour,
	}
	if cfgFn != nil {
		cfgFn(&cfg)
	}
	h := &harness{t: t, bkt: bkt, reg: prometheus.NewRegistry()}
	c, err := New(cfg, bkt, nil, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return h.now }
	h.c = c
	return h
}

// writeReplicas writes the 2h block starting at start once per replica, as RF ingesters do.
func (h *harness) writeReplicas(start int64, replicas int) []ulid.ULID {
	h.t.Helper()
	var ids []ulid.ULID
	for range replicas {
		id, err := storegatewaytest.WriteBlock(context.Background(), h.bkt, h.t.TempDir(), tenantA, blockSeries(start), storegatewaytest.BlockOptions{})
		if err != nil {
			h.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (h *harness) run() {
	h.t.Helper()
	if err := h.c.RunOnce(context.Background()); err != nil {
		h.t.Fatalf("compaction run: %v", err)
	}
}

func (h *harness) blocks() tenantBlocks {
	h.t.Helper()
	tb, err := listBlocks(context.Background(), h.bkt, tenantA)
	if err != nil {
		h.t.Fatal(err)
	}
	return tb
}

// readSamples downloads a block, opens it with Prometheus' TSDB and returns its samples
// per series.
func (h *harness) readSamples(id ulid.ULID) map[string][]sample {
	h.t.Helper()
	dir := filepath.Join(h.t.TempDir(), id.String())
	if err := downloadBlock(context.Background(), h.bkt, tenantA, id, dir); err != nil {
		h.t.Fatal(err)
	}
	b, err := tsdb.OpenBlock(nil, dir, nil, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	defer b.Close()
	q, err := tsdb.NewBlockQuerier(b, b.MinTime(), b.MaxTime())
	if err != nil {
		h.t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]sample{}
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, f := it.At()
			out[s.Labels().String()] = append(out[s.Labels().String()], sample{t: ts, f: f})
		}
		if it.Err() != nil {
			h.t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil {
		h.t.Fatal(ss.Err())
	}
	return out
}

func liveIDs(tb tenantBlocks) []ulid.ULID {
	var ids []ulid.ULID
	for _, m := range tb.live() {
		ids = append(ids, m.ULID)
	}
	return ids
}

func TestCompactor_DeduplicatesReplicasIntoOneBlockPerCompleteWindow(t *testing.T) {
	h := newHarness(t, nil, nil)
	var sources []ulid.ULID
	for start := int64(0); start < 12*hour; start += 2 * hour {
		sources = append(sources, h.writeReplicas(start, 3)...)
	}
	// The newest 2h block closes the 12h window [0h,12h) but its own windows are open.
	open := h.writeReplicas(12*hour, 3)
	h.now = time.UnixMilli(14*hour + 30*60*1000)
	h.run()

	tb := h.blocks()
	var compacted *metadata.Meta
	for _, m := range tb.live() {
		if m.Thanos.Source == metadata.CompactorSource {
			if compacted != nil {
				t.Fatalf("two compacted blocks: %s and %s", compacted.ULID, m.ULID)
			}
			compacted = m
		}
	}
	if compacted == nil {
		t.Fatal("no compacted block")
	}
	wantLive := append([]ulid.ULID{compacted.ULID}, open...)
	slices.SortFunc(wantLive, func(a, b ulid.ULID) int { return a.Compare(b) })
	if got := liveIDs(tb); !slices.Equal(got, wantLive) {
		t.Fatalf("live blocks %v, want the compacted block and the open window's replicas %v", got, wantLive)
	}

	// One replica's worth of samples: the two other replicas were deduplicated.
	if compacted.MinTime != 0 || compacted.MaxTime != 12*hour-15_000+1 {
		t.Errorf("compacted range [%d,%d), want [0,%d)", compacted.MinTime, compacted.MaxTime, 12*hour-15_000+1)
	}
	if want := uint64(6 * samplesPerBlock * len(testSeries())); compacted.Stats.NumSamples != want {
		t.Errorf("meta says %d samples, want %d (one replica)", compacted.Stats.NumSamples, want)
	}
	got := h.readSamples(compacted.ULID)
	for i, lset := range testSeries() {
		s := got[lset.String()]
		if len(s) != 6*samplesPerBlock {
			t.Fatalf("%s: read %d samples, want %d", lset, len(s), 6*samplesPerBlock)
		}
		for j, smp := range s {
			if wantT := int64(j) * 15_000; smp.t != wantT || smp.f != value(i, wantT) {
				t.Fatalf("%s sample %d = (%d,%g), want (%d,%g)", lset, j, smp.t, smp.f, wantT, value(i, wantT))
			}
		}
	}

	// Thanos-valid meta.json.
	if compacted.Thanos.Labels[TenantLabel] != tenantA || compacted.Thanos.Downsample.Resolution != 0 || compacted.Thanos.Version != metadata.ThanosVersion1 {
		t.Errorf("thanos meta %+v", compacted.Thanos)
	}
	if compacted.Compaction.Level != 2 {
		t.Errorf("compaction level %d, want 2", compacted.Compaction.Level)
	}
	gotSources := slices.Clone(compacted.Compaction.Sources)
	slices.SortFunc(gotSources, func(a, b ulid.ULID) int { return a.Compare(b) })
	slices.SortFunc(sources, func(a, b ulid.ULID) int { return a.Compare(b) })
	if !slices.Equal(gotSources, sources) {
		t.Errorf("compaction sources %v, want %v", gotSources, sources)
	}
	var files []string
	for _, f := range compacted.Thanos.Files {
		files = append(files, f.RelPath)
	}
	if !slices.Equal(files, []string{"chunks/000001", "index", metadata.MetaFilename}) {
		t.Errorf("thanos files %v", files)
	}

	// Every source is marked, in Thanos' format.
	for _, id := range sources {
		m := tb.marks[id]
		if m == nil {
			t.Fatalf("source %s not marked for deletion", id)
		}
		if m.ID != id || m.Version != metadata.DeletionMarkVersion1 || m.DeletionTime != h.now.Unix() {
			t.Errorf("deletion mark %+v", m)
		}
	}
	if len(tb.marks) != len(sources) {
		t.Errorf("%d marks, want %d", len(tb.marks), len(sources))
	}

	// The bucket index lists exactly the bucket's blocks and marks.
	idx, err := ReadBucketIndex(context.Background(), h.bkt, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	var idxBlocks, idxMarks []ulid.ULID
	for _, b := range idx.Blocks {
		idxBlocks = append(idxBlocks, b.ID)
		if b.ID == compacted.ULID && (b.MinTime != compacted.MinTime || b.MaxTime != compacted.MaxTime || b.CompactionLevel != 2 || b.Source != "compactor") {
			t.Errorf("index entry %+v", b)
		}
	}
	for _, m := range idx.BlockDeletionMarks {
		idxMarks = append(idxMarks, m.ID)
		if m.DeletionTime != h.now.Unix() {
			t.Errorf("index mark %+v", m)
		}
	}
	wantBlocks := append(slices.Clone(sources), wantLive...)
	slices.SortFunc(wantBlocks, func(a, b ulid.ULID) int { return a.Compare(b) })
	if !slices.Equal(idxBlocks, wantBlocks) {
		t.Errorf("index blocks %v, want %v", idxBlocks, wantBlocks)
	}
	if !slices.Equal(idxMarks, sources) {
		t.Errorf("index marks %v, want %v", idxMarks, sources)
	}
	if idx.UpdatedAt != h.now.Unix() || idx.Version != 1 {
		t.Errorf("index version %d updated_at %d", idx.Version, idx.UpdatedAt)
	}

	if v := testutil.ToFloat64(h.c.blocksCompacted); v != float64(len(sources)) {
		t.Errorf("blocks compacted metric %v, want %d", v, len(sources))
	}
	if v := testutil.ToFloat64(h.c.blocksMarked.WithLabelValues("compaction")); v != float64(len(sources)) {
		t.Errorf("blocks marked metric %v", v)
	}

	// A second run at the same time finds nothing to do: the open window stays as it is.
	h.run()
	if got := liveIDs(h.blocks()); !slices.Equal(got, wantLive) {
		t.Fatalf("second run changed live blocks: %v, want %v", got, wantLive)
	}
}

func TestCompactor_LeavesWindowStillReceivingData(t *testing.T) {
	h := newHarness(t, nil, nil)
	replicas := h.writeReplicas(0, 3)
	// Two of three replicas of the next block: [0h,2h) is closed by them, [2h,4h) is not.
	next := h.writeReplicas(2*hour, 2)
	h.now = time.UnixMilli(4*hour + 10*60*1000)
	h.run()
	tb := h.blocks()
	for _, id := range next {
		if tb.marks[id] != nil {
			t.Fatalf("block %s of the open window [2h,4h) was compacted", id)
		}
	}
	for _, id := range replicas {
		if tb.marks[id] == nil {
			t.Fatalf("block %s of the closed window [0h,2h) was not compacted", id)
		}
	}

	// The late third replica arrives; once the window's end is WindowCloseDelay ago, the
	// window is compacted even without a newer block.
	late := h.writeReplicas(2*hour, 1)
	h.now = time.UnixMilli(7*hour + 1)
	h.run()
	tb = h.blocks()
	for _, id := range append(next, late...) {
		if tb.marks[id] == nil {
			t.Fatalf("block %s not compacted after the close delay", id)
		}
	}
	live := tb.live()
	// The 12h window [0h,12h) is still open, so the two compacted 2h blocks stay apart.
	if len(live) != 2 {
		t.Fatalf("%d live blocks, want one per 2h window: %v", len(live), liveIDs(tb))
	}
	for _, m := range live {
		if m.Stats.NumSamples != uint64(samplesPerBlock*len(testSeries())) {
			t.Errorf("block %s [%d,%d) has %d samples, want one replica's", m.ULID, m.MinTime, m.MaxTime, m.Stats.NumSamples)
		}
	}
}

func TestCompactor_DeletesMarkedBlocksAfterDelay(t *testing.T) {
	h := newHarness(t, nil, nil)
	sources := h.writeReplicas(0, 3)
	h.now = time.UnixMilli(10 * hour)
	h.run()
	if len(h.blocks().marks) != 3 {
		t.Fatal("sources not marked")
	}

	h.now = h.now.Add(12*time.Hour - time.Second)
	h.run()
	if tb := h.blocks(); len(tb.marks) != 3 || len(tb.metas) != 4 {
		t.Fatalf("deleted before the delay: %d marks, %d blocks", len(tb.marks), len(tb.metas))
	}

	h.now = h.now.Add(time.Second)
	h.run()
	for _, id := range sources {
		var left []string
		if err := h.bkt.Iter(context.Background(), path.Join(tenantA, id.String())+"/", func(name string) error {
			left = append(left, name)
			return nil
		}, objstore.WithRecursiveIter()); err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("block %s not deleted: %v", id, left)
		}
	}
	tb := h.blocks()
	if len(tb.marks) != 0 || len(tb.metas) != 1 {
		t.Fatalf("after deletion: %d marks, %d blocks", len(tb.marks), len(tb.metas))
	}
	if v := testutil.ToFloat64(h.c.blocksDeleted); v != 3 {
		t.Errorf("blocks deleted metric %v", v)
	}
	idx, err := ReadBucketIndex(context.Background(), h.bkt, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Blocks) != 1 || len(idx.BlockDeletionMarks) != 0 {
		t.Errorf("index after deletion: %+v", idx)
	}
}

func TestCompactor_RetentionMarksOldBlocks(t *testing.T) {
	h := newHarness(t, nil, func(c *Config) {
		c.BlocksRetentionPeriod = 48 * time.Hour
		c.BlockRanges = DurationList{2 * time.Hour}
	})
	old := h.writeReplicas(0, 1)[0]
	recent := h.writeReplicas(48*hour, 1)[0]
	h.now = time.UnixMilli(50*hour + 1)
	h.run()
	tb := h.blocks()
	if tb.marks[old] == nil {
		t.Error("block past retention not marked")
	} else if !strings.Contains(tb.marks[old].Details, "retention") {
		t.Errorf("mark details %q", tb.marks[old].Details)
	}
	if tb.marks[recent] != nil {
		t.Error("block within retention marked")
	}
	h.now = h.now.Add(12 * time.Hour)
	h.run()
	if tb := h.blocks(); tb.metas[old] != nil || tb.metas[recent] == nil {
		t.Errorf("after deletion delay: old present %v, recent present %v", tb.metas[old] != nil, tb.metas[recent] != nil)
	}
}

// failingBucket fails uploads of meta.json while armed, like an object store outage
// in the middle of a block upload.
type failingBucket struct {
	objstore.Bucket
	failMeta atomic.Bool
}

func (b *failingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	if b.failMeta.Load() && path.Base(name) == metadata.MetaFilename {
		return errors.New("injected upload failure")
	}
	return b.Bucket.Upload(ctx, name, r, opts...)
}

func TestCompactor_FailedUploadLeavesNoPartialBlock(t *testing.T) {
	fs, err := filesystem.NewBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bkt := &failingBucket{Bucket: fs}
	h := newHarness(t, bkt, nil)
	sources := h.writeReplicas(0, 3)
	h.writeReplicas(2*hour, 1)
	dirsBefore := h.blockDirs()

	bkt.failMeta.Store(true)
	h.now = time.UnixMilli(4 * hour)
	if err := h.c.RunOnce(context.Background()); err == nil || !strings.Contains(err.Error(), "injected upload failure") {
		t.Fatalf("run with failing meta.json upload: %v", err)
	}
	if got := h.blockDirs(); !slices.Equal(got, dirsBefore) {
		t.Fatalf("block dirs after failed upload %v, want unchanged %v", got, dirsBefore)
	}
	if tb := h.blocks(); len(tb.marks) != 0 {
		t.Fatalf("sources marked although their replacement failed: %d marks", len(tb.marks))
	}
	if v := testutil.ToFloat64(h.c.compactionFailures); v != 1 {
		t.Errorf("compaction failures metric %v", v)
	}

	bkt.failMeta.Store(false)
	h.run()
	tb := h.blocks()
	for _, id := range sources {
		if tb.marks[id] == nil {
			t.Fatalf("source %s not compacted by the retry", id)
		}
	}
}

// blockDirs lists every <tenant>/<ULID>/ dir, complete or not.
func (h *harness) blockDirs() []string {
	h.t.Helper()
	var dirs []string
	if err := h.bkt.Iter(context.Background(), tenantA+"/", func(name string) error {
		if strings.HasSuffix(name, "/") {
			dirs = append(dirs, name)
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	slices.Sort(dirs)
	return dirs
}

func TestCompactor_ServiceRunsRightAfterStart(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.writeReplicas(0, 2)
	h.now = time.UnixMilli(10 * hour)
	if err := services.StartAndAwaitRunning(context.Background(), h.c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), h.c) })
	// The interval is an hour: only the run at start can write the index.
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := ReadBucketIndex(context.Background(), h.bkt, tenantA); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no bucket index written after start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := testutil.ToFloat64(h.c.runs); v < 1 {
		t.Errorf("runs metric %v", v)
	}
}
