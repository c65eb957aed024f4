// Package storegateway serves the tenants' bucket blocks over the Thanos StoreAPI. It keeps
// only each block's index file on local disk and reads chunks on demand with ranged bucket
// reads through a bounded LRU, so its footprint does not grow with the bucket's data size.
package storegateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/storeapi"
	"github.com/vigil-obs/vigil/pkg/util/grpcutil"
)

// Config configures the store-gateway.
type Config struct {
	DataDir        string        `yaml:"data_dir"`
	SyncInterval   time.Duration `yaml:"sync_interval"`
	ChunkCacheSize int64         `yaml:"chunk_cache_size"`
	IndexCacheSize int64         `yaml:"index_cache_size"`
	// DefaultTenant answers requests without a tenant (single-tenant mode); empty rejects them.
	DefaultTenant string `yaml:"default_tenant"`
	// IgnoreDeletionMarksDelay keeps serving a block this long after it was marked for
	// deletion (see syncTenant).
	IgnoreDeletionMarksDelay time.Duration `yaml:"ignore_deletion_marks_delay"`
}

// RegisterFlags registers the store-gateway flags. The lead sets DataDir's default to
// <data-dir>/store-gateway.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.DataDir, "store-gateway.data-dir", "./data/store-gateway", "Directory holding the downloaded index files of bucket blocks (<dir>/<tenant>/<ULID>/index).")
	f.DurationVar(&c.SyncInterval, "store-gateway.sync-interval", time.Minute, "How often to scan the bucket for new and deleted blocks.")
	f.Int64Var(&c.ChunkCacheSize, "store-gateway.chunk-cache-size", 256<<20, "Maximum bytes of chunk data cached in memory (LRU). 0 disables the cache.")
	f.Int64Var(&c.IndexCacheSize, "store-gateway.index-cache-size", 4<<30, "Maximum bytes of block index files kept on local disk. Least recently used ones are deleted and downloaded again when queried. 0 keeps all of them.")
	f.StringVar(&c.DefaultTenant, "store-gateway.default-tenant", "", "Tenant assumed for StoreAPI requests that carry none. Empty rejects such requests.")
	f.DurationVar(&c.IgnoreDeletionMarksDelay, "store-gateway.ignore-deletion-marks-delay", time.Hour, "How long a block marked for deletion (by the compactor, after it uploaded the block that replaces it) is still served. Keep it longer than the sync interval and shorter than -compactor.deletion-delay, so that queries never miss data while blocks are replaced.")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("store-gateway.data-dir must not be empty")
	case c.SyncInterval <= 0:
		return errors.New("store-gateway.sync-interval must be positive")
	case c.ChunkCacheSize < 0:
		return errors.New("store-gateway.chunk-cache-size must not be negative")
	case c.IndexCacheSize < 0:
		return errors.New("store-gateway.index-cache-size must not be negative")
	}
	return nil
}

// StoreGateway discovers blocks in the bucket and serves them per tenant through
// storepb.StoreServer and infopb.InfoServer.
type StoreGateway struct {
	services.Service
	*storeapi.Server

	cfg    Config
	bkt    objstore.Bucket
	logger *slog.Logger
	cache  *chunkCache
	// indexes bounds the local disk used by index files.
	indexes        *indexLRU
	indexDownloads prometheus.Counter

	// ctx lives as long as the service and bounds chunk reads.
	ctx    context.Context
	cancel context.CancelFunc

	syncMtx sync.Mutex // serialises syncs

	mtx     sync.RWMutex
	tenants map[string]map[ulid.ULID]*remoteBlock

	syncs, syncFailures prometheus.Counter
	blocksLoaded        prometheus.Gauge
	bucketReadBytes     prometheus.Counter

	// readAhead is the first range read size for chunks (chunkReadAhead; tests shrink it).
	readAhead int64
	// lastBlockID numbers loaded blocks for the chunk cache (remoteBlock.cacheID).
	lastBlockID atomic.Uint64
}

var (
	_ storepb.StoreServer = (*StoreGateway)(nil)
	_ infopb.InfoServer   = (*StoreGateway)(nil)
)

// New creates a store-gateway reading blocks from bkt (the root bucket; tenants are its
// top-level directories).
func New(cfg Config, bkt objstore.Bucket, logger *slog.Logger, reg prometheus.Registerer) (*StoreGateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store-gateway config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create store-gateway data dir: %w", err)
	}
	f := promauto.With(reg)
	g := &StoreGateway{
		cfg:       cfg,
		bkt:       bkt,
		logger:    logger,
		tenants:   map[string]map[ulid.ULID]*remoteBlock{},
		readAhead: chunkReadAhead,
		syncs: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_storegateway_syncs_total", Help: "Bucket syncs run by the store-gateway.",
		}),
		syncFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_storegateway_sync_failures_total", Help: "Bucket syncs that failed entirely or for some blocks.",
		}),
		blocksLoaded: f.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_storegateway_blocks_loaded", Help: "Blocks currently served by the store-gateway.",
		}),
		bucketReadBytes: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_storegateway_chunk_bytes_fetched_total", Help: "Bytes of chunk data read from the bucket.",
		}),
	}
	g.cache = newChunkCache(cfg.ChunkCacheSize,
		f.NewCounter(prometheus.CounterOpts{Name: "vigil_storegateway_chunk_cache_hits_total", Help: "Chunk cache hits."}),
		f.NewCounter(prometheus.CounterOpts{Name: "vigil_storegateway_chunk_cache_misses_total", Help: "Chunk cache misses."}),
		f.NewGauge(prometheus.GaugeOpts{Name: "vigil_storegateway_chunk_cache_bytes", Help: "Bytes held by the chunk cache."}),
	)
	g.indexes = newIndexLRU(cfg.IndexCacheSize,
		f.NewGauge(prometheus.GaugeOpts{Name: "vigil_storegateway_index_cache_bytes", Help: "Bytes of block index files on local disk."}),
		f.NewCounter(prometheus.CounterOpts{Name: "vigil_storegateway_index_cache_evictions_total", Help: "Index files deleted from local disk to stay within -store-gateway.index-cache-size."}),
	)
	g.indexDownloads = f.NewCounter(prometheus.CounterOpts{Name: "vigil_storegateway_index_downloads_total", Help: "Index files downloaded from the bucket (at discovery and after eviction)."})
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.Server = storeapi.NewServer(g.tenantQueryable, storeapi.ServerOptions{DefaultTenant: cfg.DefaultTenant})
	g.Service = services.NewTimerService(cfg.SyncInterval, g.starting, g.iteration, g.stopping)
	return g, nil
}

func (g *StoreGateway) starting(ctx context.Context) error {
	// A failed first sync is not fatal: the bucket may be briefly unavailable, and the
	// next iteration retries. Blocks that did load are served.
	if err := g.SyncNow(ctx); err != nil {
		g.logger.Warn("initial store-gateway sync failed", "err", err)
	}
	return nil
}

func (g *StoreGateway) iteration(ctx context.Context) error {
	if err := g.SyncNow(ctx); err != nil {
		g.logger.Warn("store-gateway sync failed", "err", err)
	}
	return nil
}

func (g *StoreGateway) stopping(error) error {
	g.cancel()
	g.mtx.Lock()
	tenants := g.tenants
	g.tenants = map[string]map[ulid.ULID]*remoteBlock{}
	g.mtx.Unlock()
	var errs []error
	for _, blocks := range tenants {
		for _, b := range blocks {
			if err := b.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Service names the store-gateway serves the Thanos StoreAPI and Info API under. Ingesters
// and the querier serve the same APIs on the same gRPC server in single-binary mode, so the
// store-gateway's copies have their own names; clients use grpcutil.NewStoreClient.
const (
	StoreServiceName = "vigil.storegateway.Store"
	InfoServiceName  = "vigil.storegateway.Info"
)

// RegisterGRPC registers the StoreAPI and Info services.
func (g *StoreGateway) RegisterGRPC(s grpc.ServiceRegistrar) {
	grpcutil.RegisterStoreAPI(s, StoreServiceName, InfoServiceName, g)
}

// RegisterHTTP registers POST /store-gateway/sync, which syncs with the bucket right away.
func (g *StoreGateway) RegisterHTTP(r *mux.Router) {
	r.Path("/store-gateway/sync").Methods(http.MethodPost).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.SyncNow(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "synced\n")
	})
}

// Info implements infopb.InfoServer: the time range of the tenant's blocks (or of all
// blocks when the request carries no tenant), so a Thanos Querier can prune.
func (g *StoreGateway) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	tenant, _ := storeapi.TenantFromContext(ctx, g.cfg.DefaultTenant)
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	g.mtx.RLock()
	for t, blocks := range g.tenants {
		if tenant != "" && t != tenant {
			continue
		}
		for _, b := range blocks {
			mint = min(mint, b.meta.MinTime)
			maxt = max(maxt, b.meta.MaxTime)
		}
	}
	g.mtx.RUnlock()
	return &infopb.InfoResponse{
		ComponentType: "store",
		Store:         &infopb.StoreInfo{MinTime: mint, MaxTime: maxt},
	}, nil
}

// tenantQueryable returns the tenant's blocks as one ChunkQueryable.
func (g *StoreGateway) tenantQueryable(_ context.Context, tenant string) (storage.ChunkQueryable, error) {
	g.mtx.RLock()
	defer g.mtx.RUnlock()
	blocks := g.tenants[tenant]
	if len(blocks) == 0 {
		return nil, nil
	}
	list := make([]*remoteBlock, 0, len(blocks))
	for _, b := range blocks {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b *remoteBlock) int { return a.meta.ULID.Compare(b.meta.ULID) })
	return blockSet(list), nil
}

// blockSet queries several blocks; overlapping chunks (e.g. blocks from several ingesters
// before compaction) are merged, disjoint ones passed through as stored.
type blockSet []*remoteBlock

func (bs blockSet) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q := &blockSetQuerier{disjoint: true}
	fail := func(err error) (storage.ChunkQuerier, error) {
		_ = q.Close()
		return nil, err
	}
	// Time order, so that the chunks of blocks with disjoint ranges are in order when
	// concatenated.
	bs = slices.Clone(bs)
	slices.SortStableFunc(bs, func(a, b *remoteBlock) int { return cmp.Compare(a.meta.MinTime, b.meta.MinTime) })
	var qs []storage.ChunkQuerier
	for _, b := range bs {
		if b.meta.MaxTime <= mint || b.meta.MinTime > maxt {
			continue // block time ranges are half-open [min, max)
		}
		bq, err := tsdb.NewBlockChunkQuerier(b, mint, maxt)
		if err != nil {
			return fail(fmt.Errorf("open block %s: %w", b.id, err))
		}
		qs = append(qs, bq)
		q.tsdbQueriers = qs
		ir, err := b.Index()
		if err != nil {
			return fail(fmt.Errorf("open index of block %s: %w", b.id, err))
		}
		q.indexes = append(q.indexes, ir.(blockIndexReader))
		if n := len(q.blocks); n > 0 && b.meta.MinTime < q.blocks[n-1].meta.MaxTime {
			q.disjoint = false
		}
		q.blocks = append(q.blocks, b)
	}
	if len(qs) == 0 {
		return storage.NoopChunkedQuerier(), nil
	}
	q.ChunkQuerier = storage.NewMergeChunkQuerier(qs, nil, concatOrCompactChunks)
	return q, nil
}

// compactChunks merges overlapping chunks (replicated or not yet compacted blocks).
var compactChunks = storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)

// concatOrCompactChunks joins one series' chunks from several blocks. Blocks normally cover
// disjoint time ranges, and then the chunks are passed through in time order without the
// compacting merger's per-chunk heap; only overlapping chunks are merged.
func concatOrCompactChunks(series ...storage.ChunkSeries) storage.ChunkSeries {
	if len(series) == 1 {
		return series[0]
	}
	return &storage.ChunkSeriesEntry{
		Lset: series[0].Labels(),
		ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
			var (
				metas = make([]chunks.Meta, 0, 2*len(series))
				it    chunks.Iterator
			)
			for _, s := range series {
				// Each iterator is drained before the next series reuses it; the metas
				// keep no reference to it (blocks have no tombstones to re-encode).
				it = s.Iterator(it)
				for it.Next() {
					metas = append(metas, it.At())
				}
				if err := it.Err(); err != nil {
					return errChunkIterator{err}
				}
			}
			slices.SortStableFunc(metas, func(a, b chunks.Meta) int { return cmp.Compare(a.MinTime, b.MinTime) })
			for i := 1; i < len(metas); i++ {
				if metas[i].MinTime <= metas[i-1].MaxTime {
					return compactChunks(series...).Iterator(nil)
				}
			}
			return storage.NewListChunkSeriesIterator(metas...)
		},
	}
}

type errChunkIterator struct{ err error }

func (errChunkIterator) At() chunks.Meta { return chunks.Meta{} }
func (errChunkIterator) Next() bool      { return false }
func (e errChunkIterator) Err() error    { return e.err }

// SyncNow scans the bucket once: loads new blocks (downloading their index), drops blocks
// that were deleted or marked for deletion, and removes their local files.
func (g *StoreGateway) SyncNow(ctx context.Context) error {
	g.syncMtx.Lock()
	defer g.syncMtx.Unlock()
	g.syncs.Inc()

	err := g.sync(ctx)
	if err != nil {
		g.syncFailures.Inc()
	}
	return err
}

func (g *StoreGateway) sync(ctx context.Context) error {
	tenants, err := g.listTenants(ctx)
	if err != nil {
		return err
	}
	var errs []error
	next := make(map[string]map[ulid.ULID]*remoteBlock, len(tenants))
	g.mtx.RLock()
	current := g.tenants
	g.mtx.RUnlock()
	for _, tenant := range tenants {
		blocks, err := g.syncTenant(ctx, tenant, current[tenant])
		if err != nil {
			errs = append(errs, err)
			// Keep serving what we had rather than dropping a tenant on a listing error.
			blocks = current[tenant]
		}
		if len(blocks) > 0 {
			next[tenant] = blocks
		}
	}

	g.mtx.Lock()
	g.tenants = next
	g.mtx.Unlock()

	loaded := 0
	for _, blocks := range next {
		loaded += len(blocks)
	}
	g.blocksLoaded.Set(float64(loaded))

	// Close dropped blocks after the swap, so no new query can pick them up.
	for tenant, blocks := range current {
		for id, b := range blocks {
			if _, ok := next[tenant][id]; ok {
				continue
			}
			g.cache.dropBlock(b.cacheID)
			if err := b.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := g.removeStaleLocalDirs(next); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// listTenants returns the bucket's top-level directories that are valid tenant IDs.
func (g *StoreGateway) listTenants(ctx context.Context) ([]string, error) {
	var tenants []string
	err := g.bkt.Iter(ctx, "", func(name string) error {
		if !strings.HasSuffix(name, "/") {
			return nil
		}
		t := strings.TrimSuffix(name, "/")
		if validTenant(t) {
			tenants = append(tenants, t)
		} else {
			g.logger.Warn("ignoring bucket directory that is not a valid tenant ID", "dir", name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants in bucket: %w", err)
	}
	return tenants, nil
}

// syncTenant returns the blocks the tenant should serve now, reusing loaded ones.
func (g *StoreGateway) syncTenant(ctx context.Context, tenant string, current map[ulid.ULID]*remoteBlock) (map[ulid.ULID]*remoteBlock, error) {
	var ids []ulid.ULID
	err := g.bkt.Iter(ctx, tenant+"/", func(name string) error {
		if id, err := ulid.Parse(path.Base(strings.TrimSuffix(name, "/"))); err == nil && strings.HasSuffix(name, "/") {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list blocks of tenant %q: %w", tenant, err)
	}
	// Mimir-style global markers: <tenant>/markers/<ULID>-deletion-mark.json.
	globalMarks := map[string]string{}
	err = g.bkt.Iter(ctx, tenant+"/markers/", func(name string) error {
		if base := path.Base(name); strings.HasSuffix(base, "-"+metadata.DeletionMarkFilename) {
			globalMarks[strings.TrimSuffix(base, "-"+metadata.DeletionMarkFilename)] = name
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list markers of tenant %q: %w", tenant, err)
	}

	out := make(map[ulid.ULID]*remoteBlock, len(ids))
	var errs []error
	for _, id := range ids {
		dir := path.Join(tenant, id.String())
		markPath, ok := globalMarks[id.String()]
		if !ok {
			markPath = path.Join(dir, metadata.DeletionMarkFilename)
		}
		// A marked block is still served for a while: the compactor uploads the block
		// that replaces it before marking it, but a sync that listed blocks before that
		// upload and reads the mark after it would otherwise serve neither. The querier
		// deduplicates the overlap while both are served.
		markedAt, marked, err := g.deletionMark(ctx, markPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("check deletion mark of %s: %w", dir, err))
			if b, ok := current[id]; ok {
				out[id] = b
			}
			continue
		}
		if marked && time.Since(markedAt) >= g.cfg.IgnoreDeletionMarksDelay {
			continue
		}
		if b, ok := current[id]; ok {
			out[id] = b
			continue
		}
		b, err := g.loadBlock(ctx, tenant, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if b != nil {
			out[id] = b
		}
	}
	return out, errors.Join(errs...)
}

// deletionMark reads a deletion mark: whether it exists and when it was set. A mark that
// cannot be parsed counts as set long ago (the block is on its way out either way).
func (g *StoreGateway) deletionMark(ctx context.Context, name string) (time.Time, bool, error) {
	rc, err := g.bkt.Get(ctx, name)
	if err != nil {
		if g.bkt.IsObjNotFoundErr(err) {
			return time.Time{}, false, nil
		}
		return time.Time{}, false, err
	}
	defer rc.Close()
	var m metadata.DeletionMark
	if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&m); err != nil {
		g.logger.Warn("unreadable deletion mark; treating the block as deleted", "mark", name, "err", err)
		return time.Time{}, true, nil
	}
	return time.Unix(m.DeletionTime, 0), true, nil
}

// loadBlock reads a block's meta.json and makes its index available locally. It returns
// nil without error for blocks that must not be served (incomplete, downsampled).
func (g *StoreGateway) loadBlock(ctx context.Context, tenant string, id ulid.ULID) (*remoteBlock, error) {
	dir := path.Join(tenant, id.String())
	rc, err := g.bkt.Get(ctx, path.Join(dir, metadata.MetaFilename))
	if err != nil {
		if g.bkt.IsObjNotFoundErr(err) {
			return nil, nil // upload in progress: meta.json is written last
		}
		return nil, fmt.Errorf("get meta.json of %s: %w", dir, err)
	}
	meta, err := metadata.Read(rc)
	if err != nil {
		return nil, fmt.Errorf("parse meta.json of %s: %w", dir, err)
	}
	if meta.Thanos.Downsample.Resolution != 0 {
		return nil, nil // downsampled blocks hold aggregates, not raw samples
	}
	if meta.ULID != id {
		return nil, fmt.Errorf("block %s: meta.json names ULID %s", dir, meta.ULID)
	}

	localDir := filepath.Join(g.cfg.DataDir, tenant, id.String())
	localIndex := filepath.Join(localDir, "index")
	b := &remoteBlock{
		meta:    meta,
		id:      dir,
		cacheID: g.lastBlockID.Add(1),
		bkt:     g.bkt,
		cache:   g.cache,
		loadIndex: func(ctx context.Context) (*blockIndex, error) {
			if _, err := os.Stat(localIndex); err != nil {
				if err := g.downloadIndex(ctx, path.Join(dir, "index"), localDir); err != nil {
					return nil, err
				}
				g.indexDownloads.Inc()
			}
			ir, err := openBlockIndex(localIndex)
			if err != nil {
				// A corrupt local copy is dropped so the next attempt downloads it again.
				_ = os.RemoveAll(localDir)
				return nil, fmt.Errorf("open index of %s: %w", dir, err)
			}
			return ir, nil
		},
		removeIndex: func() error { return os.Remove(localIndex) },
		indexes:     g.indexes,
		ctx:         g.ctx,
		onRead:      func(n int) { g.bucketReadBytes.Add(float64(n)) },
		readAhead:   g.readAhead,
	}
	// Load the index now: it validates the block before it is served, and a block that
	// is about to be queried need not wait for the download.
	if _, err := b.acquireIndex(); err != nil {
		return nil, err
	}
	b.releaseIndex()
	g.logger.Debug("loaded block", "tenant", tenant, "block", id, "min_time", meta.MinTime, "max_time", meta.MaxTime)
	return b, nil
}

// downloadIndex copies the index into localDir atomically (temp file + rename), so a crash
// never leaves a partial index that would later be trusted.
func (g *StoreGateway) downloadIndex(ctx context.Context, name, localDir string) error {
	if err := os.MkdirAll(localDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", localDir, err)
	}
	rc, err := g.bkt.Get(ctx, name)
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(localDir, "index.tmp-*")
	if err != nil {
		return fmt.Errorf("create temp index in %s: %w", localDir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := io.Copy(tmp, rc); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("download %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(localDir, "index")); err != nil {
		return fmt.Errorf("install index for %s: %w", name, err)
	}
	return nil
}

// removeStaleLocalDirs deletes local index copies of blocks that are no longer served.
func (g *StoreGateway) removeStaleLocalDirs(serving map[string]map[ulid.ULID]*remoteBlock) error {
	tenantDirs, err := os.ReadDir(g.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", g.cfg.DataDir, err)
	}
	var errs []error
	for _, td := range tenantDirs {
		tdir := filepath.Join(g.cfg.DataDir, td.Name())
		blocks, ok := serving[td.Name()]
		if !ok {
			if err := os.RemoveAll(tdir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", tdir, err))
			}
			continue
		}
		entries, err := os.ReadDir(tdir)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", tdir, err))
			continue
		}
		for _, e := range entries {
			id, err := ulid.Parse(e.Name())
			if err == nil {
				if _, ok := blocks[id]; ok {
					continue
				}
			}
			p := filepath.Join(tdir, e.Name())
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// validTenant mirrors the tenant ID contract (no path tricks, no control characters,
// at most 150 bytes) so bucket names never escape the data directory.
func validTenant(t string) bool {
	if t == "" || len(t) > 150 || t == "." || t == ".." || strings.ContainsAny(t, `/\`) || strings.Contains(t, "..") {
		return false
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
