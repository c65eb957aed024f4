package ingester

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
)

// ShippedStateFile is the file in each tenant's TSDB dir recording which blocks were
// uploaded, so a restart neither re-uploads nor deletes unshipped blocks.
const ShippedStateFile = "vigil.shipped.json"

// TenantLabel is the Thanos external label carrying the tenant in shipped blocks, as
// Thanos Receive does.
const TenantLabel = "tenant_id"

type shippedState struct {
	Version int                  `json:"version"`
	Shipped map[string]time.Time `json:"shipped"` // block ULID -> upload time
}

// shipper uploads a tenant's new local blocks to <tenant>/<ULID>/ in the bucket.
// Thanos' shipper does not compile against the Prometheus version Vigil uses, hence this
// small equivalent. Order per block: chunks files, index, meta.json last, so readers
// that look for meta.json never see a partial block.
type shipper struct {
	u       *userTSDB
	bkt     objstore.Bucket // prefixed with the tenant
	metrics *ingesterMetrics
	logger  *slog.Logger

	mtx     sync.Mutex
	shipped map[ulid.ULID]time.Time
}

func newShipper(u *userTSDB, bkt objstore.Bucket, _ Config, m *ingesterMetrics, logger *slog.Logger) (*shipper, error) {
	s := &shipper{
		u:       u,
		bkt:     bucket.ForTenant(bkt, u.tenant),
		metrics: m,
		logger:  logger,
		shipped: map[ulid.ULID]time.Time{},
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *shipper) statePath() string { return filepath.Join(s.u.dir, ShippedStateFile) }

func (s *shipper) load() error {
	b, err := os.ReadFile(s.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read shipped state: %w", err)
	}
	var st shippedState
	if err := json.Unmarshal(b, &st); err != nil {
		// A corrupt state file only costs re-uploads (uploads are idempotent); never
		// refuse to start because of it.
		s.logger.Warn("ignoring corrupt shipped state file", "path", s.statePath(), "err", err)
		return nil
	}
	for id, t := range st.Shipped {
		u, err := ulid.Parse(id)
		if err != nil {
			s.logger.Warn("ignoring bad block ID in shipped state", "id", id)
			continue
		}
		s.shipped[u] = t
	}
	return nil
}

// save writes the state atomically (temp file, fsync, rename) so a crash leaves either
// the old or the new state.
func (s *shipper) save() error {
	s.mtx.Lock()
	st := shippedState{Version: 1, Shipped: make(map[string]time.Time, len(s.shipped))}
	for id, t := range s.shipped {
		st.Shipped[id.String()] = t
	}
	s.mtx.Unlock()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode shipped state: %w", err)
	}
	return writeFileAtomic(s.statePath(), b)
}

// writeFileAtomic writes data to path via a temp file, fsync, rename and an fsync of
// the directory (which makes the rename itself durable), so a crash or power loss
// leaves either the old or the new content.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	if err := fsyncDir(filepath.Dir(path)); err != nil {
		return err
	}
	return nil
}

func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", dir, err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close %s: %w", dir, cerr)
	}
	return nil
}

// shippedBlocks returns a copy of the set of shipped block IDs. It must not call into
// the TSDB: it runs inside the TSDB's block reload.
func (s *shipper) shippedBlocks() map[ulid.ULID]struct{} {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	out := make(map[ulid.ULID]struct{}, len(s.shipped))
	for id := range s.shipped {
		out[id] = struct{}{}
	}
	return out
}

func (s *shipper) isShipped(id ulid.ULID) bool {
	s.mtx.Lock()
	defer s.mtx.Unlock()
	_, ok := s.shipped[id]
	return ok
}

// sync uploads every local block not shipped yet, oldest first, and returns how many
// it uploaded. It keeps going past a failed block so one bad block does not stall the
// rest; the failures are returned joined.
func (s *shipper) sync(ctx context.Context) (int, error) {
	blocks := s.u.db.Blocks()
	sort.Slice(blocks, func(a, b int) bool { return blocks[a].MinTime() < blocks[b].MinTime() })
	var (
		uploaded int
		changed  bool
		errs     []error
	)
	for _, b := range blocks {
		id := b.Meta().ULID
		if s.isShipped(id) {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if b.Meta().Stats.NumSamples == 0 {
			// Nothing worth uploading; remember it so retention can remove it.
			s.markShipped(id)
			changed = true
			continue
		}
		if err := s.upload(ctx, b.Dir()); err != nil {
			s.metrics.shippingFailures.Inc()
			errs = append(errs, fmt.Errorf("ship block %s of tenant %q: %w", id, s.u.tenant, err))
			continue
		}
		s.markShipped(id)
		changed = true
		uploaded++
		s.metrics.blocksShipped.Inc()
		s.logger.Info("shipped block", "block", id.String(), "mint", b.MinTime(), "maxt", b.MaxTime())
	}
	// Forget blocks that are gone locally (deleted by retention), so the state file
	// does not grow forever.
	if s.prune(blocks) {
		changed = true
	}
	// Persist what was shipped even when something failed, so it is not uploaded again.
	if changed {
		if err := s.save(); err != nil {
			errs = append(errs, err)
		}
	}
	return uploaded, errors.Join(errs...)
}

func (s *shipper) prune(blocks []*tsdb.Block) bool {
	present := make(map[ulid.ULID]struct{}, len(blocks))
	for _, b := range blocks {
		present[b.Meta().ULID] = struct{}{}
	}
	s.mtx.Lock()
	defer s.mtx.Unlock()
	pruned := false
	for id := range s.shipped {
		if _, ok := present[id]; !ok {
			delete(s.shipped, id)
			pruned = true
		}
	}
	return pruned
}

func (s *shipper) markShipped(id ulid.ULID) {
	s.mtx.Lock()
	s.shipped[id] = time.Now().UTC()
	s.mtx.Unlock()
}

// upload copies one block directory to <ULID>/ in the tenant bucket with a Thanos
// meta.json.
func (s *shipper) upload(ctx context.Context, dir string) error {
	meta, err := metadata.ReadFromDir(dir)
	if err != nil {
		return fmt.Errorf("read block meta: %w", err)
	}
	id := meta.ULID.String()

	var chunkFiles []string
	chunksDir := filepath.Join(dir, "chunks")
	entries, err := os.ReadDir(chunksDir)
	if err != nil {
		return fmt.Errorf("list chunks: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			chunkFiles = append(chunkFiles, path.Join("chunks", e.Name()))
		}
	}
	sort.Strings(chunkFiles)

	files := make([]metadata.File, 0, len(chunkFiles)+2)
	for _, rel := range append(append([]string{}, chunkFiles...), "index") {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("stat %s: %w", rel, err)
		}
		files = append(files, metadata.File{RelPath: rel, SizeBytes: fi.Size()})
	}
	// Thanos lists meta.json without a size (it is rewritten after the list is made).
	files = append(files, metadata.File{RelPath: metadata.MetaFilename})

	for _, rel := range append(chunkFiles, "index") {
		if err := s.uploadFile(ctx, filepath.Join(dir, filepath.FromSlash(rel)), path.Join(id, rel)); err != nil {
			return err
		}
	}

	stats, err := indexStats(ctx, dir)
	if err != nil {
		return fmt.Errorf("index stats: %w", err)
	}
	meta.Thanos = metadata.Thanos{
		IndexStats: stats,
		Version:    metadata.ThanosVersion1,
		Labels:     map[string]string{TenantLabel: s.u.tenant},
		Downsample: metadata.ThanosDownsample{Resolution: 0},
		Source:     metadata.ReceiveSource,
		Files:      files,
		UploadTime: time.Now().UTC(),
	}
	var buf bytes.Buffer
	if err := meta.Write(&buf); err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	if err := s.bkt.Upload(ctx, path.Join(id, metadata.MetaFilename), &buf); err != nil {
		return fmt.Errorf("upload meta.json: %w", err)
	}
	return nil
}

func (s *shipper) uploadFile(ctx context.Context, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("block file %s vanished during upload: %w", src, err)
		}
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer f.Close()
	if err := s.bkt.Upload(ctx, dst, f); err != nil {
		return fmt.Errorf("upload %s: %w", dst, err)
	}
	return nil
}

// indexStats computes the Thanos index_stats of a block: the largest series entry of the
// index and the largest chunk. Both come from gaps between consecutive references:
// series entries are 16-byte aligned and referenced by offset/16 (index format v2), and
// chunks are written back to back in their segment files.
func indexStats(ctx context.Context, dir string) (metadata.IndexStats, error) {
	var st metadata.IndexStats
	r, err := index.NewFileReader(filepath.Join(dir, "index"), index.DecodePostingsRaw)
	if err != nil {
		return st, fmt.Errorf("open index: %w", err)
	}
	defer r.Close()
	name, value := index.AllPostingsKey()
	p, err := r.Postings(ctx, name, value)
	if err != nil {
		return st, fmt.Errorf("read postings: %w", err)
	}
	var (
		seriesRefs []storage.SeriesRef
		chunkRefs  []chunks.BlockChunkRef
		builder    labels.ScratchBuilder
		chks       []chunks.Meta
	)
	for p.Next() {
		ref := p.At()
		seriesRefs = append(seriesRefs, ref)
		if err := r.Series(ref, &builder, &chks); err != nil {
			return st, fmt.Errorf("read series %d: %w", ref, err)
		}
		for _, c := range chks {
			chunkRefs = append(chunkRefs, chunks.BlockChunkRef(c.Ref))
		}
	}
	if err := p.Err(); err != nil {
		return st, fmt.Errorf("iterate postings: %w", err)
	}
	// The last series entry has no successor to measure against; it is left out.
	for i := 1; i < len(seriesRefs); i++ {
		st.SeriesMaxSize = max(st.SeriesMaxSize, int64(seriesRefs[i]-seriesRefs[i-1])*16)
	}
	sort.Slice(chunkRefs, func(a, b int) bool { return chunkRefs[a] < chunkRefs[b] })
	// A chunk reference's file part indexes the sorted list of segment files, as in
	// Prometheus' chunk reader.
	segs, err := os.ReadDir(filepath.Join(dir, "chunks"))
	if err != nil {
		return st, fmt.Errorf("list chunk segments: %w", err)
	}
	var fileSizes []int64
	for _, e := range segs { // os.ReadDir sorts by name
		if e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return st, fmt.Errorf("stat chunk segment %s: %w", e.Name(), err)
		}
		fileSizes = append(fileSizes, fi.Size())
	}
	for i, ref := range chunkRefs {
		file, off := ref.Unpack()
		end := int64(-1)
		if i+1 < len(chunkRefs) {
			if nf, noff := chunkRefs[i+1].Unpack(); nf == file {
				end = int64(noff)
			}
		}
		if end < 0 {
			if file >= len(fileSizes) {
				return st, fmt.Errorf("chunk reference into segment %d, block has %d", file, len(fileSizes))
			}
			end = fileSizes[file]
		}
		st.ChunkMaxSize = max(st.ChunkMaxSize, end-int64(off))
	}
	return st, nil
}
