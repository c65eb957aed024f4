package ingester

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// errStopping is returned for tenants that would have to be opened while stopping.
var errStopping = errors.New("ingester is stopping")

// Ingester is the metrics ingester service.
type Ingester struct {
	services.Service

	cfg     Config
	limits  Limits
	bucket  objstore.Bucket
	logger  *slog.Logger
	metrics *ingesterMetrics
	// tsdbMetrics re-exports each tenant TSDB's own metrics with a tenant label.
	tsdbMetrics *tsdbMetrics

	lifecycler *ring.BasicLifecycler // nil when no KV store was given
	// share is this ingester's part of the tenant-wide series limits, from the ring the
	// lifecycler sees; never nil (without a ring the whole limit applies).
	share     *ringShare
	subs      *services.Manager
	subsWatch *services.FailureWatcher
	// unregisterLocal removes this ingester from the in-process Push and Series
	// short-circuit (client.RegisterLocal); nil when not registered.
	unregisterLocal func()

	mtx          sync.RWMutex
	shuttingDown bool // set once stopping began: no TSDB may be opened after that
	tsdbs        map[string]*userTSDB
	opening      map[string]*sync.Mutex // per-tenant open lock so one slow WAL replay does not block other tenants
}

// New creates an ingester.
//
//   - limits: per-tenant limits (pkg/util/validation.Overrides); nil means unlimited.
//   - bkt: the bucket blocks are shipped to, not tenant-prefixed (the ingester prefixes
//     with the tenant); nil disables shipping.
//   - ringStore: KV client for ring key "ingester"; nil disables ring registration
//     (single-process tests).
func New(cfg Config, limits Limits, bkt objstore.Bucket, ringStore kv.Client, logger *slog.Logger, reg prometheus.Registerer) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid ingester config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &Ingester{
		cfg:     cfg,
		limits:  limits,
		bucket:  bkt,
		logger:  logger,
		tsdbs:   map[string]*userTSDB{},
		opening: map[string]*sync.Mutex{},
		share:   newRingShare(cfg.Ring, logger),
	}
	i.metrics = newIngesterMetrics(reg, i)
	i.tsdbMetrics = newTSDBMetrics()
	if reg != nil {
		if err := reg.Register(i.tsdbMetrics); err != nil {
			return nil, fmt.Errorf("register TSDB metrics: %w", err)
		}
	}
	if ringStore != nil {
		lc, err := newLifecycler(cfg.Ring, ringStore, i.share, logger, reg)
		if err != nil {
			return nil, err
		}
		i.lifecycler = lc
	}
	i.Service = services.NewBasicService(i.starting, i.running, i.stopping)
	return i, nil
}

func (i *Ingester) starting(ctx context.Context) error {
	// Reopen every tenant found on disk before joining the ring, so WAL replay has
	// happened (acknowledged data is queryable) and unshipped blocks get shipped.
	if err := i.openExistingTSDBs(ctx); err != nil {
		return err
	}
	if i.lifecycler == nil {
		return nil
	}
	var err error
	i.subs, err = services.NewManager(i.lifecycler)
	if err != nil {
		return fmt.Errorf("create ingester subservices: %w", err)
	}
	i.subsWatch = services.NewFailureWatcher()
	i.subsWatch.WatchManager(i.subs)
	// A distributor or querier in this process that finds this ingester in the ring
	// pushes to it and reads from it directly; others reach it over gRPC. Push answers
	// Unavailable until Running, as over gRPC.
	i.unregisterLocal = client.RegisterLocal(i.lifecycler.GetInstanceAddr(), client.Local{Pusher: i, Store: i.storeServer()})
	if err := services.StartManagerAndAwaitHealthy(ctx, i.subs); err != nil {
		i.unregisterLocal()
		return fmt.Errorf("join ingester ring: %w", err)
	}
	return nil
}

func (i *Ingester) openExistingTSDBs(ctx context.Context) error {
	root := filepath.Join(i.cfg.DataDir, "tsdb")
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list tenant TSDBs in %s: %w", root, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.IsDir() || tenant.Validate(e.Name()) != nil {
			continue
		}
		if _, err := i.getOrCreateTSDB(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func (i *Ingester) running(ctx context.Context) error {
	compactTicker := time.NewTicker(i.cfg.CompactionInterval)
	defer compactTicker.Stop()
	shipTicker := time.NewTicker(i.cfg.ShipInterval)
	defer shipTicker.Stop()
	var subsFailed <-chan error
	if i.subsWatch != nil {
		subsFailed = i.subsWatch.Chan()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-subsFailed:
			return fmt.Errorf("ingester subservice failed: %w", err)
		case <-compactTicker.C:
			// Errors are logged and counted per tenant; the next tick retries.
			_ = i.compactAll(ctx, false)
			i.closeIdleTSDBs()
		case <-shipTicker.C:
			i.shipAll(ctx)
		}
	}
}

func (i *Ingester) stopping(_ error) error {
	var errs []error
	if i.unregisterLocal != nil {
		i.unregisterLocal()
	}
	if i.subs != nil {
		// Leaves the ring (LeaveOnStoppingDelegate) before the TSDBs close, so
		// distributors stop sending here first.
		if err := services.StopManagerAndAwaitStopped(context.Background(), i.subs); err != nil {
			errs = append(errs, fmt.Errorf("stop ingester subservices: %w", err))
		}
	}
	if i.cfg.FlushOnShutdown {
		if err := i.FlushAll(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("flush on shutdown: %w", err))
		}
	}
	i.mtx.Lock()
	i.shuttingDown = true
	dbs := i.tsdbs
	i.tsdbs = map[string]*userTSDB{}
	i.mtx.Unlock()
	for _, u := range dbs {
		if err := u.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tenantDBs returns a snapshot of the open TSDBs sorted by tenant.
func (i *Ingester) tenantDBs() []*userTSDB {
	i.mtx.RLock()
	out := make([]*userTSDB, 0, len(i.tsdbs))
	for _, u := range i.tsdbs {
		out = append(out, u)
	}
	i.mtx.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].tenant < out[b].tenant })
	return out
}

func (i *Ingester) getTSDB(tenantID string) *userTSDB {
	i.mtx.RLock()
	defer i.mtx.RUnlock()
	return i.tsdbs[tenantID]
}

// getOrCreateTSDB returns the tenant's TSDB, opening (and replaying) it on first use.
func (i *Ingester) getOrCreateTSDB(tenantID string) (*userTSDB, error) {
	if u := i.getTSDB(tenantID); u != nil {
		return u, nil
	}
	if err := tenant.Validate(tenantID); err != nil {
		return nil, fmt.Errorf("invalid tenant: %w", err)
	}
	i.mtx.Lock()
	if u := i.tsdbs[tenantID]; u != nil {
		i.mtx.Unlock()
		return u, nil
	}
	if i.shuttingDown {
		i.mtx.Unlock()
		return nil, errStopping
	}
	lock := i.opening[tenantID]
	if lock == nil {
		lock = &sync.Mutex{}
		i.opening[tenantID] = lock
	}
	i.mtx.Unlock()

	// WAL replay can take a while: hold only this tenant's open lock meanwhile.
	lock.Lock()
	defer lock.Unlock()
	if u := i.getTSDB(tenantID); u != nil {
		return u, nil
	}
	u, err := i.openTSDB(tenantID)
	if err != nil {
		i.mtx.Lock()
		delete(i.opening, tenantID)
		i.mtx.Unlock()
		return nil, err
	}
	i.mtx.Lock()
	if i.shuttingDown {
		// Stopping began while this tenant was being opened: nobody would close it.
		delete(i.opening, tenantID)
		i.mtx.Unlock()
		return nil, errors.Join(errStopping, u.close())
	}
	i.tsdbs[tenantID] = u
	delete(i.opening, tenantID)
	i.mtx.Unlock()
	return u, nil
}

// compactAll runs head compaction for every tenant and ships new blocks.
func (i *Ingester) compactAll(ctx context.Context, force bool) error {
	var errs []error
	for _, u := range i.tenantDBs() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := u.applyLimits(i.limits, i.cfg.MaxExemplars); err != nil {
			u.logger.Warn("applying limits failed", "err", err)
		}
		idle := i.cfg.HeadCompactionIdleTimeout > 0 &&
			time.Since(time.Unix(0, u.lastWrite.Load())) > i.cfg.HeadCompactionIdleTimeout &&
			u.db.Head().NumSeries() > 0
		if err := i.compactAndShip(ctx, u, force || idle); err != nil {
			errs = append(errs, err)
		}
		// Pushes save metadata changes before they are acknowledged; this only retries a
		// save whose push failed and was not retried by its sender.
		if err := u.saveMetadata(); err != nil {
			u.logger.Warn("saving metadata failed", "err", err)
		}
	}
	return errors.Join(errs...)
}

func (i *Ingester) compactAndShip(ctx context.Context, u *userTSDB, force bool) error {
	u.compactMu.Lock()
	defer u.compactMu.Unlock()
	i.metrics.compactions.Inc()
	if err := u.compactHead(ctx, force, i.cfg.BlockRange); err != nil {
		i.metrics.compactionFailures.Inc()
		u.logger.Error("head compaction failed", "err", err)
		return err
	}
	if u.shipper == nil {
		return nil
	}
	if _, err := u.shipper.sync(ctx); err != nil {
		u.logger.Error("shipping blocks failed", "err", err)
		return err
	}
	return nil
}

func (i *Ingester) shipAll(ctx context.Context) {
	for _, u := range i.tenantDBs() {
		if u.shipper == nil {
			continue
		}
		u.compactMu.Lock()
		if _, err := u.shipper.sync(ctx); err != nil {
			u.logger.Error("shipping blocks failed", "err", err)
		}
		u.compactMu.Unlock()
	}
}

// CheckReady reports whether the ingester accepts writes: running, and ACTIVE in the
// ring when ring registration is on. For the /ready endpoint.
func (i *Ingester) CheckReady(_ context.Context) error {
	if s := i.State(); s != services.Running {
		return fmt.Errorf("ingester is %s, not running", s)
	}
	if i.lifecycler != nil {
		if st := i.lifecycler.GetState(); st != ring.ACTIVE {
			return fmt.Errorf("ingester is %s in the ring, not ACTIVE", st)
		}
	}
	return nil
}

// FlushTenant is FlushAll for one tenant; flushing a tenant without data is a no-op.
func (i *Ingester) FlushTenant(ctx context.Context, tenantID string) error {
	u := i.getTSDB(tenantID)
	if u == nil {
		return nil
	}
	return i.compactAndShip(ctx, u, true)
}

// FlushAll cuts the whole head of every tenant into blocks now and ships them. Samples
// older than the new head start are rejected as too old afterwards, as after any head
// compaction. Used by tests, the /ingester/flush endpoint and before scale-down.
func (i *Ingester) FlushAll(ctx context.Context) error {
	return i.compactAll(ctx, true)
}

// closeIdleTSDBs closes and removes tenants that received no write for CloseIdleAfter
// and have nothing left locally: empty head and no blocks (every block was shipped and
// then deleted by retention, so the bucket has all the data).
func (i *Ingester) closeIdleTSDBs() {
	if i.cfg.CloseIdleAfter <= 0 {
		return
	}
	for _, u := range i.tenantDBs() {
		if !u.idle(i.cfg.CloseIdleAfter) {
			continue
		}
		// Hold the map lock across close and removal: a push that still holds u sees it
		// closed and looks the tenant up again, and must not reopen the directory while
		// it is being removed.
		i.mtx.Lock()
		if i.tsdbs[u.tenant] != u {
			i.mtx.Unlock()
			continue
		}
		closed, err := u.closeIfIdle(i.cfg.CloseIdleAfter)
		if closed {
			delete(i.tsdbs, u.tenant)
			i.tsdbMetrics.remove(u.tenant)
		}
		i.mtx.Unlock()
		if err != nil {
			u.logger.Error("closing idle TSDB failed", "err", err)
			continue
		}
		if !closed {
			continue
		}
		i.metrics.tsdbsClosed.Inc()
		u.logger.Info("closed idle TSDB")
	}
}
