package ingester

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/wlog"
	"github.com/prometheus/prometheus/util/compression"
)

// userTSDB is one tenant's Prometheus TSDB plus the state Vigil keeps beside it.
type userTSDB struct {
	tenant  string
	dir     string
	db      *tsdb.DB
	limiter *seriesLimiter
	// refs caches head series references by labels for pushes (see refCache).
	refs    *refCache
	shipper *shipper // nil when shipping is disabled
	logger  *slog.Logger

	// flushMu makes forced head compaction and closing exclusive with pushes: pushes take
	// it shared, FlushAll and close take it exclusively. Forced compaction cuts the head up
	// to its max time, so appends racing with it would be rejected as too old anyway.
	flushMu sync.RWMutex
	// closeMu keeps queries from racing with close without making them wait for (or
	// hold up) a forced head compaction: queries take it shared, close exclusively
	// (after flushMu).
	closeMu sync.RWMutex
	closed  bool // written under flushMu and closeMu; read under either

	lastWrite atomic.Int64 // unix nanoseconds of the last successful push
	oooWindow atomic.Int64 // currently applied out-of-order window in ms

	// compactMu serialises compaction + shipping of this tenant between the periodic
	// loop and FlushAll.
	compactMu sync.Mutex

	// metaMu guards metadata, metaVersion and metaSaved. Every change gets a new
	// version; a push that changed metadata (or carries metadata another push changed
	// and has not saved yet) waits until MetadataFile holds that version.
	metaMu      sync.Mutex
	metadata    map[string]familyMetadata // latest metadata per metric family
	metaVersion uint64                    // version of the newest change
	metaSaved   uint64                    // newest version known to be in MetadataFile
	// metaSaveMu serialises writes of MetadataFile. It is the group commit: pushes that
	// wait on it while a save runs find their change saved by the next one (which
	// writes everything changed meanwhile) and return without writing again.
	metaSaveMu sync.Mutex
	// metaTestHooks lets tests stop a push at the points of the group commit; nil
	// functions outside tests.
	metaTestHooks struct{ beforeWait, beforeWrite func() }
}

// familyMetadata is a family's latest metadata and the metadata version that set it.
type familyMetadata struct {
	prompb.MetricMetadata
	version uint64
}

func (i *Ingester) openTSDB(tenant string) (*userTSDB, error) {
	dir := filepath.Join(i.cfg.DataDir, "tsdb", tenant)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create TSDB dir for tenant %q: %w", tenant, err)
	}
	refs := newRefCache()
	u := &userTSDB{
		tenant:   tenant,
		dir:      dir,
		limiter:  newSeriesLimiter(tenant, i.limits, i.share, refs),
		refs:     refs,
		logger:   i.logger.With("tenant", tenant),
		metadata: map[string]familyMetadata{},
	}
	if !i.cfg.ShipperDisabled && i.bucket != nil {
		s, err := newShipper(u, i.bucket, i.cfg, i.metrics, u.logger)
		if err != nil {
			return nil, err
		}
		u.shipper = s
	}
	var ooo time.Duration
	if i.limits != nil {
		ooo = i.limits.OutOfOrderTimeWindow(tenant)
	}
	blockRange := i.cfg.BlockRange.Milliseconds()
	opts := tsdb.DefaultOptions()
	opts.MinBlockDuration = blockRange
	// Equal min and max block duration: the ingester never merges blocks locally; the
	// compactor does that in the bucket.
	opts.MaxBlockDuration = blockRange
	opts.RetentionDuration = 0 // local retention is decided by blocksToDelete
	opts.WALSegmentSize = i.cfg.WALSegmentSize
	if i.cfg.WALCompression {
		opts.WALCompression = compression.Snappy
	} else {
		opts.WALCompression = compression.None
	}
	opts.StripeSize = i.cfg.StripeSize
	opts.EnableExemplarStorage = i.cfg.MaxExemplars > 0
	opts.MaxExemplars = i.cfg.MaxExemplars
	opts.OutOfOrderTimeWindow = ooo.Milliseconds()
	opts.SeriesLifecycleCallback = u.limiter
	opts.BlockReloadInterval = i.cfg.BlockReloadInterval
	opts.EnableOverlappingCompaction = false
	opts.BlocksToDelete = u.blocksToDelete(i.cfg.RetentionPeriod)

	if err := u.loadMetadata(); err != nil {
		return nil, err
	}
	db, err := tsdb.Open(dir, u.logger, i.tsdbMetrics.registry(tenant), opts, nil)
	if err != nil {
		i.tsdbMetrics.remove(tenant)
		return nil, fmt.Errorf("open TSDB for tenant %q in %s: %w", tenant, dir, err)
	}
	// Vigil decides when to cut blocks (the running loop), so that compaction and shipping
	// run together and forced flushes do not race Prometheus' own compaction goroutine.
	db.DisableCompactions()
	u.db = db
	u.oooWindow.Store(ooo.Milliseconds())
	// Limits apply only to series created after WAL replay.
	u.limiter.enable(db.Head().NumSeries)
	u.lastWrite.Store(time.Now().UnixNano())
	return u, nil
}

// blocksToDelete implements local retention: a block is deleted locally only once it has
// been shipped and its data is older than the retention period. The TSDB applies it
// whenever it reloads blocks (every -ingester.tsdb-block-reload-interval).
func (u *userTSDB) blocksToDelete(retention time.Duration) tsdb.BlocksToDeleteFunc {
	return func(blocks []*tsdb.Block) map[ulid.ULID]struct{} {
		// Prometheus' default rule (delete blocks compacted into a newer one) is not
		// needed: with equal min and max block durations and overlapping compaction off,
		// the ingester never merges blocks locally.
		deletable := map[ulid.ULID]struct{}{}
		if u.shipper == nil {
			// Without a bucket there is nowhere else the data lives: keep it until
			// retention, then drop it.
			cutoff := time.Now().Add(-retention).UnixMilli()
			for _, b := range blocks {
				if b.MaxTime() < cutoff {
					deletable[b.Meta().ULID] = struct{}{}
				}
			}
			return deletable
		}
		shipped := u.shipper.shippedBlocks()
		cutoff := time.Now().Add(-retention).UnixMilli()
		for _, b := range blocks {
			id := b.Meta().ULID
			if _, ok := shipped[id]; ok && b.MaxTime() < cutoff {
				deletable[id] = struct{}{}
			}
		}
		return deletable
	}
}

// applyLimits applies a changed out-of-order window without a restart.
func (u *userTSDB) applyLimits(limits Limits, maxExemplars int64) error {
	if limits == nil {
		return nil
	}
	want := limits.OutOfOrderTimeWindow(u.tenant).Milliseconds()
	if want == u.oooWindow.Load() {
		return nil
	}
	// ApplyConfig also resizes exemplar storage (and dereferences ExemplarsConfig when
	// exemplars are enabled), so the exemplar size must be passed unchanged.
	cfg := &config.Config{StorageConfig: config.StorageConfig{
		TSDBConfig:      &config.TSDBConfig{OutOfOrderTimeWindow: want},
		ExemplarsConfig: &config.ExemplarsConfig{MaxExemplars: maxExemplars},
	}}
	if err := u.db.ApplyConfig(cfg); err != nil {
		return fmt.Errorf("apply out-of-order window %dms for tenant %q: %w", want, u.tenant, err)
	}
	u.oooWindow.Store(want)
	return nil
}

// compactHead cuts blocks the head is ready to give up (older than 1.5 block ranges,
// Prometheus' rule), or, when force is set, the whole head including out-of-order data.
func (u *userTSDB) compactHead(ctx context.Context, force bool, blockRange time.Duration) error {
	if !force {
		if err := u.db.Compact(ctx); err != nil {
			return fmt.Errorf("compact head of tenant %q: %w", u.tenant, err)
		}
		return nil
	}
	// Hold pushes off while the whole head is cut, see flushMu.
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	if u.closed {
		return nil
	}
	h := u.db.Head()
	rangeMs := blockRange.Milliseconds()
	minT, maxT := h.MinTime(), h.MaxTime()
	if h.NumSeries() > 0 && minT != math.MaxInt64 && maxT != math.MinInt64 {
		// Cut block-range-aligned blocks, as Prometheus' own head compaction does, so
		// shipped blocks line up with the compactor's 2h grid.
		for minT <= maxT {
			blockMaxT := (minT/rangeMs + 1) * rangeMs
			if minT < 0 && minT%rangeMs != 0 {
				blockMaxT = (minT / rangeMs) * rangeMs
			}
			// The last block ends at the head's max time, not at the range boundary:
			// otherwise its MaxTime lies in the future and retention (which looks at
			// MaxTime) would keep it for up to a block range too long.
			if blockMaxT > maxT {
				blockMaxT = maxT + 1
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			// RangeHead's maxt is inclusive, block max time exclusive.
			if err := u.db.CompactHead(tsdb.NewRangeHead(h, minT, blockMaxT-1)); err != nil {
				return fmt.Errorf("force-compact head of tenant %q [%d,%d): %w", u.tenant, minT, blockMaxT, err)
			}
			minT = blockMaxT
		}
	}
	if err := u.db.CompactOOOHead(ctx); err != nil {
		return fmt.Errorf("compact out-of-order head of tenant %q: %w", u.tenant, err)
	}
	return nil
}

// syncWAL fsyncs the newest WAL (and out-of-order WBL) segments. fsync on a second file
// descriptor flushes the inode's dirty pages, which is all we need: Prometheus' WAL has
// already written the records with write(2) by the time Commit returns. Two segments are
// synced because the WAL may have rotated between the commit and this call.
func (u *userTSDB) syncWAL() error {
	for _, sub := range []string{"wal", wlog.WblDirName} {
		dir := filepath.Join(u.dir, sub)
		first, last, err := wlog.Segments(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("list WAL segments in %s: %w", dir, err)
		}
		if last < 0 {
			continue
		}
		for seg := max(first, last-1); seg <= last; seg++ {
			if err := fsyncFile(wlog.SegmentName(dir, seg)); err != nil {
				return err
			}
		}
	}
	return nil
}

func fsyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // segment truncated away meanwhile; its data is in a block
		}
		return fmt.Errorf("open %s for fsync: %w", path, err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close %s: %w", path, cerr)
	}
	return nil
}

// MetadataFile keeps the latest metric metadata per family across restarts. Metadata
// is not in the Prometheus WAL because Vigil keeps it per family, while the TSDB's WAL
// metadata records belong to a series: remote write 1.0 sends metadata in requests of
// its own, for family names (a histogram's) that no series carries, and the TSDB drops
// a series' metadata with the series. A push that changes metadata returns only after
// the file is rewritten (fsync, rename, directory fsync), so acknowledged metadata
// survives kill -9 and power loss. Changes are rare (a new family, a new HELP or unit):
// pushes with unchanged metadata do not touch the disk.
const MetadataFile = "vigil.metadata.json"

// setMetadata records md and returns the metadata version that must be saved before
// the push may be acknowledged, 0 if none. That is the push's own newest change, or
// the version of an identical change another push made and has not saved yet.
func (u *userTSDB) setMetadata(md []prompb.MetricMetadata) (mustSave uint64) {
	if len(md) == 0 {
		return 0
	}
	u.metaMu.Lock()
	defer u.metaMu.Unlock()
	for _, m := range md {
		if m.MetricFamilyName == "" {
			continue
		}
		if old, ok := u.metadata[m.MetricFamilyName]; ok && old.Type == m.Type && old.Help == m.Help && old.Unit == m.Unit {
			if old.version > u.metaSaved {
				mustSave = max(mustSave, old.version)
			}
			continue
		}
		u.metaVersion++
		// Clone: request strings may alias the gRPC receive buffer (see client.Codec),
		// which must not be pinned by long-lived state.
		u.metadata[strings.Clone(m.MetricFamilyName)] = familyMetadata{
			MetricMetadata: prompb.MetricMetadata{
				MetricFamilyName: strings.Clone(m.MetricFamilyName),
				Type:             m.Type,
				Help:             strings.Clone(m.Help),
				Unit:             strings.Clone(m.Unit),
			},
			version: u.metaVersion,
		}
		mustSave = u.metaVersion
	}
	return mustSave
}

type savedMetadata struct {
	Type string `json:"type"`
	Help string `json:"help,omitempty"`
	Unit string `json:"unit,omitempty"`
}

func (u *userTSDB) loadMetadata() error {
	b, err := os.ReadFile(filepath.Join(u.dir, MetadataFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read metadata of tenant %q: %w", u.tenant, err)
	}
	var saved map[string]savedMetadata
	if err := json.Unmarshal(b, &saved); err != nil {
		// The file is replaced atomically, so this is damage from outside; metadata is
		// advisory and resent by Prometheus: never refuse to start over it.
		u.logger.Warn("ignoring corrupt metadata file", "err", err)
		return nil
	}
	u.metaMu.Lock()
	defer u.metaMu.Unlock()
	for name, m := range saved {
		t := prompb.MetricMetadata_MetricType_value[strings.ToUpper(m.Type)]
		// Version 0: already saved.
		u.metadata[name] = familyMetadata{MetricMetadata: prompb.MetricMetadata{
			MetricFamilyName: name, Type: prompb.MetricMetadata_MetricType(t), Help: m.Help, Unit: m.Unit,
		}}
	}
	return nil
}

// saveMetadata saves every metadata change not saved yet (a no-op without any).
func (u *userTSDB) saveMetadata() error {
	u.metaMu.Lock()
	v := u.metaVersion
	u.metaMu.Unlock()
	return u.saveMetadataVersion(v)
}

// saveMetadataVersion returns once MetadataFile holds metadata version v or newer.
// Concurrent callers share saves: whoever gets metaSaveMu writes the newest version,
// which covers everyone who waited for it meanwhile.
func (u *userTSDB) saveMetadataVersion(v uint64) error {
	if h := u.metaTestHooks.beforeWait; h != nil {
		h()
	}
	u.metaSaveMu.Lock()
	defer u.metaSaveMu.Unlock()
	u.metaMu.Lock()
	if u.metaSaved >= v {
		u.metaMu.Unlock()
		return nil
	}
	version := u.metaVersion
	saved := make(map[string]savedMetadata, len(u.metadata))
	for name, m := range u.metadata {
		saved[name] = savedMetadata{Type: metricTypeString(m.Type), Help: m.Help, Unit: m.Unit}
	}
	u.metaMu.Unlock()
	if h := u.metaTestHooks.beforeWrite; h != nil {
		h()
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return fmt.Errorf("encode metadata of tenant %q: %w", u.tenant, err)
	}
	if err := writeFileAtomic(filepath.Join(u.dir, MetadataFile), b); err != nil {
		// metaSaved stays behind: the next push carrying any of these changes, or the
		// next periodic save, writes them again.
		return fmt.Errorf("save metadata of tenant %q: %w", u.tenant, err)
	}
	u.metaMu.Lock()
	u.metaSaved = max(u.metaSaved, version)
	u.metaMu.Unlock()
	return nil
}

// close closes the TSDB; pushes holding a stale pointer see closed and retry.
func (u *userTSDB) close() error {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	if u.closed {
		return nil
	}
	u.closeMu.Lock()
	defer u.closeMu.Unlock()
	u.closed = true
	merr := u.saveMetadata()
	if err := u.db.Close(); err != nil {
		return errors.Join(merr, fmt.Errorf("close TSDB of tenant %q: %w", u.tenant, err))
	}
	return merr
}

// idle reports whether the tenant got no write for idleFor and holds nothing locally.
func (u *userTSDB) idle(idleFor time.Duration) bool {
	return time.Since(time.Unix(0, u.lastWrite.Load())) >= idleFor &&
		u.db.Head().NumSeries() == 0 && len(u.db.Blocks()) == 0
}

// closeIfIdle re-checks idle under the exclusive push lock (a push may have landed since
// the caller's check), then closes the TSDB and removes its directory.
func (u *userTSDB) closeIfIdle(idleFor time.Duration) (bool, error) {
	u.flushMu.Lock()
	defer u.flushMu.Unlock()
	if u.closed || !u.idle(idleFor) {
		return false, nil
	}
	u.closeMu.Lock()
	defer u.closeMu.Unlock()
	u.closed = true
	if err := u.db.Close(); err != nil {
		return true, fmt.Errorf("close idle TSDB of tenant %q: %w", u.tenant, err)
	}
	if err := os.RemoveAll(u.dir); err != nil {
		return true, fmt.Errorf("remove idle TSDB dir %s: %w", u.dir, err)
	}
	return true, nil
}

// timeRange is the span of the tenant's local data (head and blocks).
func (u *userTSDB) timeRange() (minT, maxT int64) {
	minT, maxT = int64(math.MaxInt64), int64(math.MinInt64)
	if h := u.db.Head(); h.NumSeries() > 0 {
		minT, maxT = h.MinTime(), h.MaxTime()
	}
	for _, b := range u.db.Blocks() {
		minT, maxT = min(minT, b.MinTime()), max(maxT, b.MaxTime())
	}
	return minT, maxT
}
