package tracestore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// QuerierConfig configures the trace read path.
type QuerierConfig struct {
	BlockSyncInterval time.Duration `yaml:"block_sync_interval"`
	CacheBytes        int64         `yaml:"cache_bytes"`
}

// RegisterFlags registers the trace querier flags.
func (c *QuerierConfig) RegisterFlags(f *flag.FlagSet) {
	f.DurationVar(&c.BlockSyncInterval, "traces.querier.block-sync-interval", 30*time.Second, "How often a tenant's trace block list is re-read from the bucket (on demand). Keep below -traces.retain-flushed.")
	f.Int64Var(&c.CacheBytes, "traces.querier.cache-bytes", 256<<20, "Bytes of block metadata (bloom filters, indexes, summaries, Parquet footers) cached in memory.")
}

// HeadSource lists the ingester heads to query (one Reader per ingester).
// The consumer of the ring implements it; see NewAddrHeadSource.
type HeadSource interface {
	Heads(ctx context.Context) ([]Reader, error)
}

// StaticHeads is a HeadSource with a fixed list, e.g. the in-process
// TraceIngester in single-binary mode or tests.
func StaticHeads(readers ...Reader) HeadSource { return staticHeads(readers) }

type staticHeads []Reader

func (s staticHeads) Heads(context.Context) ([]Reader, error) { return s, nil }

// AddrHeadSource dials ingesters by address (e.g. from the ring's healthy
// instances) and keeps one client connection per address.
type AddrHeadSource struct {
	addrs func(ctx context.Context) ([]string, error)
	opts  []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewAddrHeadSource returns a HeadSource over the ingesters addrs returns.
// With no dial options it uses plaintext, as the shared gRPC server does.
func NewAddrHeadSource(addrs func(ctx context.Context) ([]string, error), opts ...grpc.DialOption) *AddrHeadSource {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &AddrHeadSource{addrs: addrs, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// healthyInstances is the part of dskit's ring.ReadRing RingAddrs needs.
type healthyInstances interface {
	GetAllHealthy(op ring.Operation) (ring.ReplicationSet, error)
}

// RingAddrs lists the addresses of the healthy ingesters in r (the ring of
// key "ingester"), for NewAddrHeadSource.
func RingAddrs(r healthyInstances) func(context.Context) ([]string, error) {
	return func(context.Context) ([]string, error) {
		rs, err := r.GetAllHealthy(ring.Read)
		if err != nil {
			return nil, fmt.Errorf("read ingester ring: %w", err)
		}
		return rs.GetAddresses(), nil
	}
}

// Heads implements HeadSource; connections to addresses that left are closed.
func (s *AddrHeadSource) Heads(ctx context.Context) ([]Reader, error) {
	addrs, err := s.addrs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list ingesters: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	live := map[string]bool{}
	out := make([]Reader, 0, len(addrs))
	for _, a := range addrs {
		live[a] = true
		cc, ok := s.conns[a]
		if !ok {
			cc, err = grpc.NewClient(a, s.opts...)
			if err != nil {
				return nil, fmt.Errorf("dial ingester %s: %w", a, err)
			}
			s.conns[a] = cc
		}
		out = append(out, NewQueryClient(cc))
	}
	for a, cc := range s.conns {
		if !live[a] {
			_ = cc.Close()
			delete(s.conns, a)
		}
	}
	return out, nil
}

// Close closes all connections.
func (s *AddrHeadSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for a, cc := range s.conns {
		errs = append(errs, cc.Close())
		delete(s.conns, a)
	}
	return errors.Join(errs...)
}

// Querier implements Reader over the ingesters' heads and the bucket's trace
// blocks, merging and deduplicating their answers.
type Querier struct {
	services.Service
	heads  HeadSource
	blocks *blockStore
	logger *slog.Logger
}

var _ Reader = (*Querier)(nil)

// NewQuerier builds the trace read path. bkt is the root bucket; heads may be
// nil to query only the bucket.
func NewQuerier(cfg QuerierConfig, bkt objstore.Bucket, heads HeadSource, logger *slog.Logger, _ prometheus.Registerer) (*Querier, error) {
	if bkt == nil {
		return nil, errors.New("trace querier: bucket is required")
	}
	if cfg.CacheBytes <= 0 {
		return nil, errors.New("traces.querier.cache-bytes: must be positive")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if heads == nil {
		heads = StaticHeads()
	}
	q := &Querier{heads: heads, blocks: newBlockStore(bkt, cfg.BlockSyncInterval, cfg.CacheBytes, logger), logger: logger}
	if cfg.BlockSyncInterval > 0 {
		// Refresh the block lists of tenants already queried in the
		// background, so queries rarely wait for a bucket listing.
		q.Service = services.NewTimerService(cfg.BlockSyncInterval, nil, q.refreshBlockLists, nil)
	} else {
		q.Service = services.NewIdleService(nil, nil)
	}
	return q, nil
}

func (q *Querier) refreshBlockLists(ctx context.Context) error {
	for _, tenant := range q.blocks.knownTenants() {
		if _, err := q.blocks.refresh(ctx, tenant); err != nil {
			// Keep serving the previous list; the next tick retries.
			q.logger.Warn("refreshing trace block list failed", "tenant", tenant, "err", err)
		}
	}
	return nil
}

// fanOut calls fn on every head concurrently. A failing ingester is
// tolerated while at least one answers (replication keeps recent data on
// several of them); the error is returned only when every head failed.
func (q *Querier) fanOut(ctx context.Context, fn func(Reader) error) error {
	heads, err := q.heads.Heads(ctx)
	if err != nil {
		return err
	}
	if len(heads) == 0 {
		return nil
	}
	errs := make([]error, len(heads))
	var wg sync.WaitGroup
	for i, h := range heads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(h)
		}()
	}
	wg.Wait()
	failed := 0
	for _, e := range errs {
		if e != nil {
			if errors.Is(e, ErrInvalidRequest) {
				return e
			}
			failed++
		}
	}
	if failed == len(heads) {
		return fmt.Errorf("all %d ingesters failed: %w", failed, errors.Join(errs...))
	}
	if failed > 0 {
		q.logger.Warn("some ingesters failed a trace query", "failed", failed, "of", len(heads), "err", errors.Join(errs...))
	}
	return nil
}

// TraceByID implements Reader.
func (q *Querier) TraceByID(ctx context.Context, id TraceID, start, end time.Time) (ptrace.Traces, bool, error) {
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return ptrace.NewTraces(), false, err
	}
	// The bucket lookup runs while the ingesters answer.
	var brows []spanRow
	var berr error
	bdone := make(chan struct{})
	go func() {
		defer close(bdone)
		brows, berr = q.blocks.traceRows(ctx, tenant, id, start, end)
	}()
	var mu sync.Mutex
	var rows []spanRow
	err = q.fanOut(ctx, func(r Reader) error {
		td, found, err := r.TraceByID(ctx, id, start, end)
		if err != nil || !found {
			return err
		}
		rs := tracesToRows(td)
		mu.Lock()
		rows = append(rows, rs...)
		mu.Unlock()
		return nil
	})
	<-bdone
	if err != nil {
		return ptrace.NewTraces(), false, err
	}
	if berr != nil {
		return ptrace.NewTraces(), false, berr
	}
	rows = append(rows, brows...)
	if len(rows) == 0 {
		return ptrace.NewTraces(), false, nil
	}
	sortRows(rows)
	td, err := rowsToTracesChecked(id, dedupSorted(rows))
	return td, err == nil, err
}

// Search implements Reader.
func (q *Querier) Search(ctx context.Context, req SearchRequest) ([]TraceSummary, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	// The bucket search runs while the ingesters answer.
	var bres []TraceSummary
	var berr error
	bdone := make(chan struct{})
	go func() {
		defer close(bdone)
		bres, berr = q.blocks.Search(ctx, tenant, req)
	}()
	set := summarySet{}
	var mu sync.Mutex
	err = q.fanOut(ctx, func(r Reader) error {
		res, err := r.Search(ctx, req)
		mu.Lock()
		for _, s := range res {
			set.add(s)
		}
		mu.Unlock()
		return err
	})
	<-bdone
	if err != nil {
		return nil, err
	}
	if berr != nil {
		return nil, berr
	}
	for _, s := range bres {
		set.add(s)
	}
	return set.sorted(limitOf(req)), nil
}

// Services implements Reader.
func (q *Querier) Services(ctx context.Context, start, end time.Time) ([]string, error) {
	return q.collectStrings(ctx, start, end,
		func(r Reader) ([]string, error) { return r.Services(ctx, start, end) },
		func(ix *blockIndex, add func(string)) {
			for _, s := range ix.Services {
				add(s)
			}
		})
}

// AttributeKeys implements Reader.
func (q *Querier) AttributeKeys(ctx context.Context, start, end time.Time) ([]string, error) {
	return q.collectStrings(ctx, start, end,
		func(r Reader) ([]string, error) { return r.AttributeKeys(ctx, start, end) },
		func(ix *blockIndex, add func(string)) {
			for k := range ix.Attributes {
				add(k)
			}
		})
}

// AttributeValues implements Reader.
func (q *Querier) AttributeValues(ctx context.Context, key string, start, end time.Time) ([]string, error) {
	vals, err := q.collectStrings(ctx, start, end,
		func(r Reader) ([]string, error) { return r.AttributeValues(ctx, key, start, end) },
		func(ix *blockIndex, add func(string)) {
			for _, v := range ix.Attributes[key] {
				add(v)
			}
		})
	if len(vals) > maxIndexedValues {
		vals = vals[:maxIndexedValues]
	}
	return vals, err
}

func (q *Querier) collectStrings(ctx context.Context, start, end time.Time, fromHead func(Reader) ([]string, error), fromIndex func(*blockIndex, func(string))) ([]string, error) {
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	var mu sync.Mutex
	add := func(s string) { set[s] = struct{}{} }
	err = q.fanOut(ctx, func(r Reader) error {
		res, err := fromHead(r)
		mu.Lock()
		defer mu.Unlock()
		for _, s := range res {
			add(s)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	err = q.blocks.forIndexes(ctx, tenant, start, end, func(_ *BlockMeta, ix *blockIndex) error {
		fromIndex(ix, add)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sortedKeys(set), nil
}

// Operations implements Reader.
func (q *Querier) Operations(ctx context.Context, service, spanKind string, start, end time.Time) ([]Operation, error) {
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	set := map[Operation]struct{}{}
	var mu sync.Mutex
	err = q.fanOut(ctx, func(r Reader) error {
		res, err := r.Operations(ctx, service, spanKind, start, end)
		mu.Lock()
		defer mu.Unlock()
		for _, op := range res {
			set[op] = struct{}{}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	kind := int32(-1)
	if spanKind != "" {
		kind = spanKindFromString(spanKind)
	}
	err = q.blocks.forIndexes(ctx, tenant, start, end, func(_ *BlockMeta, ix *blockIndex) error {
		for _, op := range ix.Operations[service] {
			if kind < 0 || spanKindFromString(op.SpanKind) == kind {
				set[op] = struct{}{}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Operation, 0, len(set))
	for op := range set {
		out = append(out, op)
	}
	sortOperations(out)
	return out, nil
}

// Dependencies implements Reader. Counts from different sources are added:
// with replication or right after a flush the same calls may be counted more
// than once until the compactor deduplicates the blocks.
func (q *Querier) Dependencies(ctx context.Context, start, end time.Time) ([]DependencyLink, error) {
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	links := map[depKey]*DependencyLink{}
	var mu sync.Mutex
	err = q.fanOut(ctx, func(r Reader) error {
		res, err := r.Dependencies(ctx, start, end)
		mu.Lock()
		mergeLinks(links, res)
		mu.Unlock()
		return err
	})
	if err != nil {
		return nil, err
	}
	metas, err := q.blocks.blocks(ctx, tenant)
	if err != nil {
		return nil, err
	}
	for _, m := range metas {
		if !inRange(m, start, end) {
			continue
		}
		res, err := q.blocks.dependencies(ctx, tenant, m)
		if err != nil {
			return nil, err
		}
		mergeLinks(links, res)
	}
	return sortedLinks(links), nil
}
