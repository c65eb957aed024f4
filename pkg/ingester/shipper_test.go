package ingester

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"github.com/thanos-io/thanos/pkg/block/metadata"
)

// recordingBucket records the order of uploads.
type recordingBucket struct {
	objstore.Bucket
	mtx     sync.Mutex
	uploads []string
}

func (b *recordingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	b.mtx.Lock()
	b.uploads = append(b.uploads, name)
	b.mtx.Unlock()
	return b.Bucket.Upload(ctx, name, r, opts...)
}

func (b *recordingBucket) uploaded() []string {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return append([]string(nil), b.uploads...)
}

func pushN(t *testing.T, ing *Ingester, tenant string, base int64, n int) {
	t.Helper()
	var req prompb.WriteRequest
	for s := 0; s < 10; s++ {
		ts := series([]string{"__name__", "m", "series", string(rune('a' + s))})
		for j := 0; j < n; j++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + int64(j)*15_000, Value: float64(j)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	resp, err := ing.Push(ctxFor(tenant), &req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rejections) != 0 {
		t.Fatalf("rejections: %s", resp)
	}
}

// downloadBlock copies <tenant>/<id>/ from the bucket into a local dir.
func downloadBlock(t *testing.T, bkt objstore.Bucket, prefix, dst string) {
	t.Helper()
	ctx := context.Background()
	err := bkt.Iter(ctx, prefix, func(name string) error {
		rc, err := bkt.Get(ctx, name)
		if err != nil {
			return err
		}
		defer rc.Close()
		local := filepath.Join(dst, filepath.FromSlash(strings.TrimPrefix(name, prefix)))
		if err := os.MkdirAll(filepath.Dir(local), 0o750); err != nil {
			return err
		}
		f, err := os.Create(local)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, rc)
		return err
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
}

func TestShippingAndRetention(t *testing.T) {
	fsBkt, err := filesystem.NewBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bkt := &recordingBucket{Bucket: fsBkt}
	cfg := testConfig(t)
	// Shipped blocks leave the local disk as soon as the TSDB reloads its blocks.
	cfg.RetentionPeriod = time.Millisecond
	cfg.BlockReloadInterval = time.Second
	cfg.CloseIdleAfter = time.Millisecond
	ing := startIngester(t, cfg, nil, bkt)

	base := time.Now().Add(-time.Hour).UnixMilli()
	pushN(t, ing, "team-a", base, 100)
	pushN(t, ing, "team-b", base, 100)

	// Flush one tenant over HTTP, as the e2e tests do.
	r := mux.NewRouter()
	ing.RegisterHTTP(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/ingester/flush?tenant=team-a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("flush status %d: %s", resp.StatusCode, body)
	}

	uploads := bkt.uploaded()
	if len(uploads) == 0 {
		t.Fatal("nothing uploaded")
	}
	if b := ing.getTSDB("team-b"); len(b.db.Blocks()) != 0 || b.db.Head().NumSeries() == 0 {
		t.Fatal("flushing team-a also flushed team-b")
	}
	blockIDs := map[string]bool{}
	for _, u := range uploads {
		parts := strings.SplitN(u, "/", 3)
		if len(parts) < 3 || parts[0] != "team-a" {
			t.Fatalf("object %q outside <tenant>/<ULID>/", u)
		}
		blockIDs[parts[1]] = true
	}
	// Per block: meta.json is the last object uploaded and index comes before it.
	for id := range blockIDs {
		var seq []string
		for _, u := range uploads {
			if strings.HasPrefix(u, "team-a/"+id+"/") {
				seq = append(seq, strings.TrimPrefix(u, "team-a/"+id+"/"))
			}
		}
		if seq[len(seq)-1] != "meta.json" || seq[len(seq)-2] != "index" || !strings.HasPrefix(seq[0], "chunks/") {
			t.Fatalf("block %s upload order %v", id, seq)
		}
	}

	var totalSamples uint64
	for id := range blockIDs {
		dst := filepath.Join(t.TempDir(), id)
		downloadBlock(t, fsBkt, path.Join("team-a", id)+"/", dst)
		meta, err := metadata.ReadFromDir(dst)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Thanos.Version != metadata.ThanosVersion1 || meta.Thanos.Labels[TenantLabel] != "team-a" ||
			meta.Thanos.Source != metadata.ReceiveSource || meta.Thanos.Downsample.Resolution != 0 {
			t.Fatalf("bad thanos section %+v", meta.Thanos)
		}
		for _, f := range meta.Thanos.Files {
			if f.RelPath == metadata.MetaFilename {
				continue
			}
			fi, err := os.Stat(filepath.Join(dst, filepath.FromSlash(f.RelPath)))
			if err != nil || fi.Size() != f.SizeBytes {
				t.Fatalf("file %s: size %d in meta, stat %v %v", f.RelPath, f.SizeBytes, fi, err)
			}
		}
		b, err := tsdb.OpenBlock(nil, dst, nil, nil)
		if err != nil {
			t.Fatalf("shipped block does not open: %v", err)
		}
		totalSamples += b.Meta().Stats.NumSamples
		if want := maxChunkEntrySize(t, b); meta.Thanos.IndexStats.ChunkMaxSize != want {
			t.Fatalf("index_stats.chunk_max_size %d, want %d", meta.Thanos.IndexStats.ChunkMaxSize, want)
		}
		if s := meta.Thanos.IndexStats.SeriesMaxSize; s <= 0 || s > 1024 {
			t.Fatalf("index_stats.series_max_size %d for 10 small series", s)
		}
		b.Close()
	}
	if totalSamples != 1000 {
		t.Fatalf("shipped %d samples, want 1000", totalSamples)
	}

	// Shipped state is on disk.
	stateBytes, err := os.ReadFile(filepath.Join(cfg.DataDir, "tsdb", "team-a", ShippedStateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st shippedState
	if err := json.Unmarshal(stateBytes, &st); err != nil {
		t.Fatal(err)
	}
	for id := range blockIDs {
		if _, ok := st.Shipped[id]; !ok {
			t.Fatalf("block %s missing from shipped state %s", id, stateBytes)
		}
	}

	// Retention removes the local copies (the TSDB reloads blocks every second here).
	u := ing.getTSDB("team-a")
	// The TSDB unloads a block before it removes its directory: wait for both.
	waitFor(t, 30*time.Second, "local blocks deleted after retention", func() bool {
		if len(u.db.Blocks()) != 0 {
			return false
		}
		for id := range blockIDs {
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "tsdb", "team-a", id)); !os.IsNotExist(err) {
				return false
			}
		}
		return true
	})
	for id := range blockIDs {
		if ok, err := fsBkt.Exists(context.Background(), path.Join("team-a", id, "meta.json")); err != nil || !ok {
			t.Fatalf("bucket copy of %s gone: %v", id, err)
		}
	}

	// The next shipper pass forgets the deleted blocks.
	ing.shipAll(context.Background())
	stateBytes, err = os.ReadFile(filepath.Join(cfg.DataDir, "tsdb", "team-a", ShippedStateFile))
	if err != nil {
		t.Fatal(err)
	}
	st = shippedState{}
	if err := json.Unmarshal(stateBytes, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Shipped) != 0 {
		t.Fatalf("shipped state still lists deleted blocks: %s", stateBytes)
	}

	// Idle, empty and fully shipped: the tenant is closed and its directory removed.
	ing.closeIdleTSDBs()
	if ing.getTSDB("team-a") != nil {
		t.Fatal("idle tenant still open")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "tsdb", "team-a")); !os.IsNotExist(err) {
		t.Fatalf("idle tenant dir still there: %v", err)
	}
	// And it comes back on the next write.
	pushN(t, ing, "team-a", time.Now().UnixMilli(), 1)
	if ing.getTSDB("team-a") == nil {
		t.Fatal("tenant not reopened by a write")
	}
}

func TestUnshippedBlocksAreKeptAndShippedAfterRestart(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	cfg := testConfig(t)
	cfg.RetentionPeriod = time.Millisecond
	cfg.BlockReloadInterval = time.Second

	// First run without a bucket... but with shipping expected: simulate a bucket outage
	// by failing every upload.
	failing := &failingBucket{Bucket: bkt}
	ing, err := New(cfg, nil, failing, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ing.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ing.AwaitRunning(context.Background()); err != nil {
		t.Fatal(err)
	}
	pushN(t, ing, "t1", time.Now().Add(-time.Hour).UnixMilli(), 10)
	if err := ing.FlushAll(context.Background()); err == nil {
		t.Fatal("flush with a failing bucket reported success")
	}
	u := ing.getTSDB("t1")
	if len(u.db.Blocks()) == 0 {
		t.Fatal("no block cut")
	}
	ing.StopAsync()
	if err := ing.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(bkt.Objects()) != 0 {
		t.Fatalf("objects uploaded despite failures: %v", bkt.Objects())
	}

	// Restart with a working bucket: the pending block is shipped by the ship loop.
	cfg.ShipInterval = 50 * time.Millisecond
	ing2 := startIngester(t, cfg, nil, bkt)
	waitFor(t, 30*time.Second, "pending block shipped after restart", func() bool {
		for name := range bkt.Objects() {
			if strings.HasPrefix(name, "t1/") && strings.HasSuffix(name, "/meta.json") {
				return true
			}
		}
		return false
	})
	waitFor(t, 30*time.Second, "shipped block removed locally", func() bool {
		return len(ing2.getTSDB("t1").db.Blocks()) == 0
	})
}

type failingBucket struct{ objstore.Bucket }

func (b *failingBucket) Upload(context.Context, string, io.Reader, ...objstore.ObjectUploadOption) error {
	return io.ErrUnexpectedEOF
}

func TestPeriodicHeadCompactionShipsBlocks(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	cfg := testConfig(t)
	cfg.BlockRange = time.Minute
	cfg.CompactionInterval = 50 * time.Millisecond
	cfg.HeadCompactionIdleTimeout = 0
	ing := startIngester(t, cfg, nil, bkt)

	// A head spanning more than 1.5 block ranges has its oldest range cut into a block
	// by the regular schedule, without any flush.
	base := time.Now().Add(-time.Hour).Truncate(time.Minute).UnixMilli()
	pushN(t, ing, "t1", base, 12) // 12 samples 15s apart: 2m45s of data
	waitFor(t, 30*time.Second, "a block shipped by the compaction loop", func() bool {
		for name := range bkt.Objects() {
			if strings.HasSuffix(name, "/meta.json") {
				return true
			}
		}
		return false
	})
	u := ing.getTSDB("t1")
	if u.db.Head().MinTime() <= base {
		t.Fatalf("head still starts at %d, compaction did not truncate it", u.db.Head().MinTime())
	}
}

func TestIdleHeadIsCompacted(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	cfg := testConfig(t)
	cfg.CompactionInterval = 50 * time.Millisecond
	cfg.HeadCompactionIdleTimeout = time.Millisecond
	ing := startIngester(t, cfg, nil, bkt)
	pushN(t, ing, "t1", time.Now().Add(-time.Hour).UnixMilli(), 3)
	waitFor(t, 30*time.Second, "the idle head to be cut and shipped", func() bool {
		for name := range bkt.Objects() {
			if strings.HasSuffix(name, "/meta.json") {
				return true
			}
		}
		return false
	})
}

// maxChunkEntrySize reads every chunk of a block and returns the largest on-disk entry:
// uvarint length, encoding byte, data, CRC32.
func maxChunkEntrySize(t *testing.T, b *tsdb.Block) int64 {
	t.Helper()
	ir, err := b.Index()
	if err != nil {
		t.Fatal(err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Close()
	name, value := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), name, value)
	if err != nil {
		t.Fatal(err)
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		maxSize int64
	)
	for p.Next() {
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			t.Fatal(err)
		}
		for _, m := range chks {
			chk, _, err := cr.ChunkOrIterable(m)
			if err != nil {
				t.Fatal(err)
			}
			n := len(chk.Bytes())
			maxSize = max(maxSize, int64(binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(n))+1+n+4))
		}
	}
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	return maxSize
}
