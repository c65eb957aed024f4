// Package compactor is the metrics compactor: per tenant it merges the 2h blocks the
// ingesters ship (deduplicating the replicas of each block) into larger aligned blocks,
// applies retention, deletes blocks some time after they were marked for deletion, and
// writes the tenant's bucket index. One compactor instance per bucket is assumed.
package compactor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/services"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"

	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// TenantLabel is the Thanos external label carrying the tenant, as in the ingesters'
// blocks; compacted blocks keep it so Thanos tools group them with their sources.
const TenantLabel = "tenant_id"

// Compactor is the metrics compactor service.
type Compactor struct {
	services.Service

	cfg    Config
	bkt    objstore.Bucket
	logger *slog.Logger
	// now is the clock; tests replace it to move time past delays and retention.
	now func() time.Time

	runs               prometheus.Counter
	runFailures        prometheus.Counter
	blocksCompacted    prometheus.Counter
	blocksCreated      prometheus.Counter
	blocksMarked       *prometheus.CounterVec
	blocksDeleted      prometheus.Counter
	lastSuccessfulRun  prometheus.Gauge
	compactionFailures prometheus.Counter
}

// New builds a metrics compactor over bkt. reg may be nil.
func New(cfg Config, bkt objstore.Bucket, logger *slog.Logger, reg prometheus.Registerer) (*Compactor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	c := &Compactor{
		cfg:    cfg,
		bkt:    bkt,
		logger: logger.With("component", "compactor"),
		now:    time.Now,
		runs: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_runs_total", Help: "Metrics compactor runs started.",
		}),
		runFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_run_failures_total", Help: "Metrics compactor runs that failed for at least one tenant.",
		}),
		compactionFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_compaction_failures_total", Help: "Compaction jobs (download, merge, upload, mark) that failed.",
		}),
		blocksCompacted: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_blocks_compacted_total", Help: "Source blocks merged into compacted blocks.",
		}),
		blocksCreated: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_blocks_created_total", Help: "Compacted blocks uploaded.",
		}),
		blocksMarked: f.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_compactor_blocks_marked_for_deletion_total", Help: "Blocks marked for deletion, by reason (compaction, retention).",
		}, []string{"reason"}),
		blocksDeleted: f.NewCounter(prometheus.CounterOpts{
			Name: "vigil_compactor_blocks_deleted_total", Help: "Marked blocks deleted from the bucket after the deletion delay.",
		}),
		lastSuccessfulRun: f.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_compactor_last_successful_run_timestamp_seconds", Help: "Unix time of the last run that succeeded for every tenant.",
		}),
	}
	c.Service = services.NewBasicService(nil, c.running, nil)
	return c, nil
}

// running runs once right away, then every compaction interval. A failed run is logged and
// retried at the next tick rather than stopping the service.
func (c *Compactor) running(ctx context.Context) error {
	ticker := time.NewTicker(c.cfg.CompactionInterval)
	defer ticker.Stop()
	for {
		if err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.logger.Error("metrics compaction run failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// RunOnce compacts, applies retention, deletes and re-indexes every tenant once. A
// tenant's failure does not stop the others; the failures are returned joined.
func (c *Compactor) RunOnce(ctx context.Context) error {
	c.runs.Inc()
	tenants, err := c.listTenants(ctx)
	if err != nil {
		c.runFailures.Inc()
		return err
	}
	var errs []error
	for _, t := range tenants {
		if err := c.runTenant(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("tenant %q: %w", t, err))
		}
	}
	if len(errs) > 0 {
		c.runFailures.Inc()
		return errors.Join(errs...)
	}
	c.lastSuccessfulRun.Set(float64(c.now().Unix()))
	return nil
}

func (c *Compactor) listTenants(ctx context.Context) ([]string, error) {
	var tenants []string
	err := c.bkt.Iter(ctx, "", func(name string) error {
		if !strings.HasSuffix(name, "/") {
			return nil
		}
		t := strings.TrimSuffix(name, "/")
		if err := tenant.Validate(t); err != nil {
			c.logger.Warn("ignoring bucket directory that is not a valid tenant ID", "dir", name, "err", err)
			return nil
		}
		tenants = append(tenants, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tenants in bucket: %w", err)
	}
	return tenants, nil
}

// runTenant does one tenant's work in an order where each step sees the previous one's
// result: compaction, retention, deletion, and last the bucket index of what remains. The
// index is written even when an earlier step failed, so it reflects the bucket.
func (c *Compactor) runTenant(ctx context.Context, tenantID string) error {
	logger := c.logger.With("tenant", tenantID)
	tb, err := listBlocks(ctx, c.bkt, tenantID)
	if err != nil {
		return err
	}
	var errs []error
	if err := c.compactTenant(ctx, logger, tenantID, tb.live()); err != nil {
		errs = append(errs, err)
	}
	if ctx.Err() != nil {
		return errors.Join(append(errs, ctx.Err())...)
	}
	// Re-list: compaction added blocks and marks.
	if tb, err = listBlocks(ctx, c.bkt, tenantID); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := c.applyRetention(ctx, logger, tenantID, tb); err != nil {
		errs = append(errs, err)
	}
	if err := c.deleteMarked(ctx, logger, tenantID, tb); err != nil {
		errs = append(errs, err)
	}
	if tb, err = listBlocks(ctx, c.bkt, tenantID); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := writeBucketIndex(ctx, c.bkt, tenantID, newBucketIndex(tb, c.now())); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// compactTenant runs planned jobs until none is left. Each job replaces two or more
// blocks by at most one, so the loop ends.
func (c *Compactor) compactTenant(ctx context.Context, logger *slog.Logger, tenantID string, live []*metadata.Meta) error {
	ranges := c.cfg.BlockRanges.millis()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		job := planNext(live, ranges, c.now().UnixMilli(), c.cfg.WindowCloseDelay.Milliseconds())
		if job == nil {
			return nil
		}
		out, err := c.compactJob(ctx, logger, tenantID, job)
		if err != nil {
			c.compactionFailures.Inc()
			return err
		}
		done := map[ulid.ULID]bool{}
		for _, m := range job {
			done[m.ULID] = true
		}
		next := live[:0:0]
		for _, m := range live {
			if !done[m.ULID] {
				next = append(next, m)
			}
		}
		if out != nil {
			next = append(next, out)
		}
		live = next
	}
}

// compactJob merges the job's blocks into one new block, uploads it and marks the sources
// for deletion. It returns the new block's meta, or nil when the merge held no samples.
func (c *Compactor) compactJob(ctx context.Context, logger *slog.Logger, tenantID string, job []*metadata.Meta) (*metadata.Meta, error) {
	workDir := filepath.Join(c.cfg.DataDir, tenantID, "job-"+job[0].ULID.String())
	// A crashed earlier attempt may have left files behind.
	if err := os.RemoveAll(workDir); err != nil {
		return nil, fmt.Errorf("clean work dir %s: %w", workDir, err)
	}
	defer func() {
		if err := os.RemoveAll(workDir); err != nil {
			logger.Warn("failed to remove compaction work dir", "dir", workDir, "err", err)
		}
	}()

	srcDirs := make([]string, 0, len(job))
	ids := make([]string, 0, len(job))
	for _, m := range job {
		dir := filepath.Join(workDir, "src", m.ULID.String())
		if err := downloadBlock(ctx, c.bkt, tenantID, m.ULID, dir); err != nil {
			return nil, fmt.Errorf("download source block: %w", err)
		}
		srcDirs = append(srcDirs, dir)
		ids = append(ids, m.ULID.String())
	}

	// Overlapping compaction with the compacting merger is what deduplicates replicas:
	// identical samples of the same series collapse into one.
	comp, err := tsdb.NewLeveledCompactorWithOptions(ctx, nil, logger, c.cfg.BlockRanges.millis(), nil, tsdb.LeveledCompactorOptions{
		EnableOverlappingCompaction: true,
		MergeFunc:                   storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge),
	})
	if err != nil {
		return nil, fmt.Errorf("create tsdb compactor: %w", err)
	}
	outDir := filepath.Join(workDir, "out")
	newIDs, err := comp.Compact(outDir, srcDirs, nil)
	if err != nil {
		return nil, fmt.Errorf("compact blocks %s: %w", strings.Join(ids, ","), err)
	}

	var out *metadata.Meta
	details := "compacted into an empty block"
	if len(newIDs) > 0 {
		bdir := filepath.Join(outDir, newIDs[0].String())
		if out, err = c.writeThanosMeta(tenantID, bdir); err != nil {
			return nil, err
		}
		if err := uploadBlock(ctx, c.bkt, tenantID, out, bdir); err != nil {
			return nil, fmt.Errorf("upload compacted block %s: %w", out.ULID, err)
		}
		c.blocksCreated.Inc()
		details = "compacted into " + out.ULID.String()
	}
	// Marks come only after the new block is visible, so at every moment the data is in
	// at least one unmarked block.
	for _, m := range job {
		if err := writeDeletionMark(ctx, c.bkt, tenantID, m.ULID, c.now(), details); err != nil {
			return out, fmt.Errorf("mark compacted source block: %w", err)
		}
		c.blocksMarked.WithLabelValues("compaction").Inc()
	}
	c.blocksCompacted.Add(float64(len(job)))
	if out != nil {
		logger.Info("compacted blocks", "sources", strings.Join(ids, ","), "block", out.ULID.String(),
			"mint", out.MinTime, "maxt", out.MaxTime, "level", out.Compaction.Level, "samples", out.Stats.NumSamples)
	} else {
		logger.Info("compacted blocks into nothing: no samples", "sources", strings.Join(ids, ","))
	}
	return out, nil
}

// writeThanosMeta adds the Thanos section to the meta.json Prometheus wrote (which already
// holds the merged compaction level and sources) and returns the result.
func (c *Compactor) writeThanosMeta(tenantID, bdir string) (*metadata.Meta, error) {
	var files []metadata.File
	err := filepath.WalkDir(bdir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(bdir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		// Only what uploadBlock uploads: Prometheus' tombstones file stays local, as in
		// Thanos' shipper.
		if rel != "index" && !strings.HasPrefix(rel, "chunks/") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, metadata.File{RelPath: rel, SizeBytes: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list files of compacted block %s: %w", bdir, err)
	}
	// Thanos lists meta.json without a size: it is rewritten after the list is made.
	files = append(files, metadata.File{RelPath: metadata.MetaFilename})
	meta, err := metadata.InjectThanos(log.NewNopLogger(), bdir, metadata.Thanos{
		Version:    metadata.ThanosVersion1,
		Labels:     map[string]string{TenantLabel: tenantID},
		Downsample: metadata.ThanosDownsample{Resolution: 0},
		Source:     metadata.CompactorSource,
		Files:      files,
		UploadTime: c.now().UTC(),
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("write thanos meta.json of %s: %w", bdir, err)
	}
	return meta, nil
}

// applyRetention marks blocks whose newest sample is older than the retention period.
func (c *Compactor) applyRetention(ctx context.Context, logger *slog.Logger, tenantID string, tb tenantBlocks) error {
	if c.cfg.BlocksRetentionPeriod <= 0 {
		return nil
	}
	cutoff := c.now().Add(-c.cfg.BlocksRetentionPeriod).UnixMilli()
	for _, m := range tb.live() {
		if m.MaxTime > cutoff {
			continue
		}
		if err := writeDeletionMark(ctx, c.bkt, tenantID, m.ULID, c.now(), "retention period exceeded"); err != nil {
			return fmt.Errorf("mark block past retention: %w", err)
		}
		c.blocksMarked.WithLabelValues("retention").Inc()
		logger.Info("marked block for deletion: past retention", "block", m.ULID.String(), "maxt", m.MaxTime)
	}
	return nil
}

// deleteMarked deletes blocks marked at least the deletion delay ago. The delay gives
// store-gateways time to load the replacing block and drop the marked one.
func (c *Compactor) deleteMarked(ctx context.Context, logger *slog.Logger, tenantID string, tb tenantBlocks) error {
	now := c.now()
	for id, mark := range tb.marks {
		if now.Sub(time.Unix(mark.DeletionTime, 0)) < c.cfg.DeletionDelay {
			continue
		}
		if err := deleteBlock(ctx, c.bkt, tenantID, id); err != nil {
			return fmt.Errorf("delete block %s: %w", path.Join(tenantID, id.String()), err)
		}
		c.blocksDeleted.Inc()
		logger.Info("deleted block marked for deletion", "block", id.String(), "marked_at", time.Unix(mark.DeletionTime, 0).UTC())
	}
	return nil
}
