// Package querier answers PromQL and the Prometheus HTTP API for Vigil by merging what the
// ingesters (recent data) and the store-gateways (bucket blocks) return over the Thanos
// StoreAPI. Duplicates from replication and from head/bucket overlap are merged away with
// storage.ChainedSeriesMerge.
package querier

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// Config configures the querier.
type Config struct {
	StoreGatewayAddresses     flagext.StringSliceCSV `yaml:"store_gateway_addresses"`
	Timeout                   time.Duration          `yaml:"timeout"`
	MaxSamples                int                    `yaml:"max_samples"`
	MaxFetchedSeriesPerQuery  int                    `yaml:"max_fetched_series_per_query"`
	QueryIngestersWithin      time.Duration          `yaml:"query_ingesters_within"`
	LookbackDelta             time.Duration          `yaml:"lookback_delta"`
	DefaultEvaluationInterval time.Duration          `yaml:"default_evaluation_interval"`
	Client                    client.Config          `yaml:"client"`
	ThanosStoreListenAddress  string                 `yaml:"thanos_store_listen_address"`
	ThanosStoreDefaultTenant  string                 `yaml:"thanos_store_default_tenant"`
}

// RegisterFlags registers the querier flags. The lead sets StoreGatewayAddresses' default
// to the local gRPC address before parsing.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.Var(&c.StoreGatewayAddresses, "querier.store-gateway-addresses", "Comma-separated gRPC addresses of the store-gateways to query for bucket blocks.")
	f.DurationVar(&c.Timeout, "querier.timeout", 2*time.Minute, "Maximum time a query may run before it is aborted.")
	f.IntVar(&c.MaxSamples, "querier.max-samples", 50_000_000, "Maximum number of samples a single query may load into memory.")
	f.IntVar(&c.MaxFetchedSeriesPerQuery, "querier.max-fetched-series-per-query", 0, "Maximum number of series a query may fetch from ingesters and store-gateways (counted per backend). 0 disables the limit.")
	f.DurationVar(&c.QueryIngestersWithin, "querier.query-ingesters-within", 13*time.Hour, "Query ingesters only for queries whose end is within this duration of now. 0 always queries them.")
	f.DurationVar(&c.LookbackDelta, "querier.lookback-delta", 5*time.Minute, "How far back PromQL looks for the latest sample of a series.")
	f.DurationVar(&c.DefaultEvaluationInterval, "querier.default-evaluation-interval", time.Minute, "Step of subqueries that give no step.")
	c.Client.RegisterFlagsWithPrefix("querier.client.", f)
	f.StringVar(&c.ThanosStoreListenAddress, "querier.thanos-store-listen-address", "", "Address (e.g. :10901) on which to serve the Thanos StoreAPI and Info API over the merged view, for a Thanos Querier --endpoint. Empty disables it.")
	f.StringVar(&c.ThanosStoreDefaultTenant, "querier.thanos-store-default-tenant", "anonymous", "Tenant for Thanos StoreAPI requests without THANOS-TENANT or X-Scope-OrgID metadata. Empty rejects them (use with multi-tenancy).")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Timeout <= 0:
		return errors.New("querier.timeout must be positive")
	case c.MaxSamples <= 0:
		return errors.New("querier.max-samples must be positive")
	case c.MaxFetchedSeriesPerQuery < 0:
		return errors.New("querier.max-fetched-series-per-query must not be negative")
	case c.LookbackDelta <= 0:
		return errors.New("querier.lookback-delta must be positive")
	case c.DefaultEvaluationInterval <= 0:
		return errors.New("querier.default-evaluation-interval must be positive")
	}
	if err := c.Client.Validate(); err != nil {
		return fmt.Errorf("querier client: %w", err)
	}
	return nil
}

// Deps are the querier's collaborators.
type Deps struct {
	// Ingesters lists the ingesters to query (RingAddresses in production).
	Ingesters AddressSource
	// StoreGateways defaults to Config.StoreGatewayAddresses.
	StoreGateways AddressSource
	// ClientFactory dials ingesters; it defaults to NewClientFactory(Config.Client).
	ClientFactory ClientFactory
	// StoreGatewayClientFactory dials store-gateways; it defaults to
	// NewStoreGatewayClientFactory(Config.Client).
	StoreGatewayClientFactory ClientFactory
	// Subservices are started before and stopped after the querier (e.g. the ingester ring).
	Subservices []services.Service
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Querier is Vigil's query component: a storage.SampleAndChunkQueryable and
// storage.ExemplarQueryable over ingesters and store-gateways, a PromQL engine, the
// Prometheus HTTP API and a Thanos StoreAPI endpoint.
type Querier struct {
	services.Service

	cfg           Config
	logger        *slog.Logger
	ingesters     AddressSource
	storeGateways AddressSource
	pool          *clientPool // ingesters
	sgPool        *clientPool // store-gateways; may share addresses with pool
	engine        *promql.Engine
	subservices   *services.Manager
	now           func() time.Time

	thanosServer *grpc.Server
	thanosAddr   string
	thanosDone   chan struct{}

	// slabs recycles the buffers received chunk bytes live in (see slabAllocator).
	slabs sync.Pool
}

var (
	_ storage.SampleAndChunkQueryable = (*Querier)(nil)
	_ storage.ExemplarQueryable       = (*Querier)(nil)
)

// New creates a querier. Start it (dskit service) before serving queries.
func New(cfg Config, deps Deps) (*Querier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("querier config: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Ingesters == nil {
		deps.Ingesters = StaticAddresses(nil)
	}
	if deps.StoreGateways == nil {
		deps.StoreGateways = StaticAddresses(cfg.StoreGatewayAddresses)
	}
	if deps.ClientFactory == nil {
		deps.ClientFactory = NewClientFactory(cfg.Client)
	}
	if deps.StoreGatewayClientFactory == nil {
		deps.StoreGatewayClientFactory = NewStoreGatewayClientFactory(cfg.Client)
	}
	q := &Querier{
		cfg:           cfg,
		logger:        deps.Logger,
		ingesters:     deps.Ingesters,
		storeGateways: deps.StoreGateways,
		pool:          newClientPool(deps.ClientFactory),
		sgPool:        newClientPool(deps.StoreGatewayClientFactory),
		now:           time.Now,
	}
	q.engine = promql.NewEngine(EngineOpts(cfg, deps.Logger, deps.Registerer))
	if len(deps.Subservices) > 0 {
		m, err := services.NewManager(deps.Subservices...)
		if err != nil {
			return nil, fmt.Errorf("querier subservices: %w", err)
		}
		q.subservices = m
	}
	q.Service = services.NewIdleService(q.starting, q.stopping)
	return q, nil
}

// EngineOpts are the PromQL engine options the querier uses; exported so tests and the
// ruler can build an identical engine.
func EngineOpts(cfg Config, logger *slog.Logger, reg prometheus.Registerer) promql.EngineOpts {
	interval := cfg.DefaultEvaluationInterval.Milliseconds()
	return promql.EngineOpts{
		Logger:                   logger,
		Reg:                      reg,
		MaxSamples:               cfg.MaxSamples,
		Timeout:                  cfg.Timeout,
		LookbackDelta:            cfg.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return interval },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	}
}

func (q *Querier) starting(ctx context.Context) error {
	if q.subservices != nil {
		if err := services.StartManagerAndAwaitHealthy(ctx, q.subservices); err != nil {
			return fmt.Errorf("start querier subservices: %w", err)
		}
	}
	return q.startThanosListener()
}

func (q *Querier) stopping(error) error {
	q.stopThanosListener()
	var errs []error
	if q.subservices != nil {
		if err := services.StopManagerAndAwaitStopped(context.Background(), q.subservices); err != nil {
			errs = append(errs, fmt.Errorf("stop querier subservices: %w", err))
		}
	}
	if err := errors.Join(q.pool.close(), q.sgPool.close()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Engine returns the querier's PromQL engine (e.g. for the ruler).
func (q *Querier) Engine() promql.QueryEngine { return q.engine }

// Querier implements storage.Queryable.
func (q *Querier) Querier(mint, maxt int64) (storage.Querier, error) {
	return &fanoutQuerier{q: q, mint: mint, maxt: maxt}, nil
}

// ChunkQuerier implements storage.ChunkQueryable.
func (q *Querier) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return &fanoutChunkQuerier{fanoutQuerier{q: q, mint: mint, maxt: maxt}}, nil
}

// backendGroup is a set of backends of one kind, of which maxErrors may fail.
type backendGroup struct {
	kind      string
	addrs     []string
	maxErrors int
}

// backends returns the backends holding data for [mint, maxt].
func (q *Querier) backends(ctx context.Context, maxt int64) ([]backendGroup, error) {
	var groups []backendGroup
	// Ingesters only hold recent data; skipping them for old ranges is an optimisation,
	// the merge makes querying both always correct.
	if q.cfg.QueryIngestersWithin == 0 || maxt >= q.now().Add(-q.cfg.QueryIngestersWithin).UnixMilli() {
		addrs, maxErrs, err := q.ingesters.Addresses(ctx)
		if err != nil {
			return nil, err
		}
		groups = append(groups, backendGroup{kind: "ingester", addrs: addrs, maxErrors: maxErrs})
	}
	addrs, maxErrs, err := q.storeGateways.Addresses(ctx)
	if err != nil {
		return nil, err
	}
	groups = append(groups, backendGroup{kind: "store-gateway", addrs: addrs, maxErrors: maxErrs})
	return groups, nil
}

// fanOut calls fn for every backend concurrently. Failures within a group's maxErrors
// become warnings; any other failure fails the call. Errors marked permanent (limits) are
// returned as they are and cancel the other calls.
func (q *Querier) fanOut(ctx context.Context, maxt int64, fn func(ctx context.Context, kind, addr string, c Client) error) (annotations.Annotations, error) {
	groups, err := q.backends(ctx, maxt)
	if err != nil {
		return nil, promql.ErrStorage{Err: err}
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type result struct {
		group int
		addr  string
		err   error
	}
	var (
		wg      sync.WaitGroup
		results = make(chan result)
	)
	for gi, g := range groups {
		for _, addr := range g.addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pool := q.pool
				if g.kind == "store-gateway" {
					pool = q.sgPool
				}
				c, err := pool.get(addr)
				if err == nil {
					err = fn(ctx, g.kind, addr, c)
				}
				results <- result{group: gi, addr: addr, err: err}
			}()
		}
	}
	go func() { wg.Wait(); close(results) }()

	var (
		warns    annotations.Annotations
		failures = make([]int, len(groups))
		firstErr error
	)
	for r := range results {
		if r.err == nil || firstErr != nil {
			continue
		}
		g := groups[r.group]
		var limitErr *limitError
		switch {
		case errors.As(r.err, &limitErr):
			firstErr = r.err
		case parent.Err() != nil:
			// The query's own deadline or cancellation, not a backend failure.
			firstErr = contextError(parent.Err())
		default:
			failures[r.group]++
			wrapped := fmt.Errorf("%s %s: %w", g.kind, r.addr, r.err)
			if failures[r.group] > g.maxErrors {
				firstErr = promql.ErrStorage{Err: wrapped}
			} else {
				warns.Add(wrapped)
			}
		}
		if firstErr != nil {
			cancel()
		}
	}
	if firstErr == nil && parent.Err() != nil {
		firstErr = contextError(parent.Err())
	}
	return warns, firstErr
}

// contextError maps the query context's end to the PromQL errors the API turns into
// "timeout" (503) and "canceled" responses.
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return promql.ErrQueryTimeout("while fetching series from ingesters and store-gateways")
	}
	return promql.ErrQueryCanceled("while fetching series from ingesters and store-gateways")
}

// limitError is a query limit violation: reported as a PromQL execution error (422), never
// retried or downgraded to a warning.
type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }

// fanoutQuerier is one query's view over all backends.
type fanoutQuerier struct {
	q          *Querier
	mint, maxt int64
	// fetched counts series received for this query, for max-fetched-series-per-query.
	fetched atomic.Int64

	slabsMu sync.Mutex
	slabs   []*[]byte // returned to q.slabs on Close
}

func (f *fanoutQuerier) timeRange(hints *storage.SelectHints) (int64, int64) {
	if hints == nil {
		return f.mint, f.maxt
	}
	return hints.Start, hints.End
}

// seriesBatchSize is how many series the querier asks backends to put in one message.
const seriesBatchSize = 64

// fetch runs one Series call on every backend and returns one sorted, de-duplicated list
// per backend.
func (f *fanoutQuerier) fetch(ctx context.Context, hints *storage.SelectHints, matchers []*labels.Matcher) ([][]*fetchedSeries, annotations.Annotations, error) {
	mint, maxt := f.timeRange(hints)
	pbms, err := storepb.PromMatchersToMatchers(matchers...)
	if err != nil {
		return nil, nil, fmt.Errorf("convert matchers: %w", err)
	}
	req := &storepb.SeriesRequest{
		MinTime:                 mint,
		MaxTime:                 maxt,
		Matchers:                pbms,
		PartialResponseDisabled: true,
		PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
		// Backends that support it (the store-gateway) send many series per message,
		// which saves a gRPC frame, a decode and a buffer per series.
		ResponseBatchSize: seriesBatchSize,
	}
	if hints != nil {
		req.SkipChunks = hints.Func == "series"
		req.Limit = int64(hints.Limit)
		req.Step = hints.Step
		req.Range = hints.Range
	}
	var (
		mtx        sync.Mutex
		sets       [][]*fetchedSeries
		storeWarns []error
	)
	warns, err := f.q.fanOut(ctx, maxt, func(ctx context.Context, kind, addr string, c Client) error {
		series, ws, err := f.fetchOne(ctx, c, req)
		if err != nil {
			return err
		}
		mtx.Lock()
		defer mtx.Unlock()
		sets = append(sets, series)
		for _, w := range ws {
			storeWarns = append(storeWarns, fmt.Errorf("%s %s: %s", kind, addr, w))
		}
		return nil
	})
	for _, w := range storeWarns {
		warns.Add(w)
	}
	return sets, warns, err
}

func (f *fanoutQuerier) fetchOne(ctx context.Context, c Client, req *storepb.SeriesRequest) ([]*fetchedSeries, []string, error) {
	stream, err := c.Series(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("series: %w", err)
	}
	var (
		out    []*fetchedSeries
		sorted = true
		limit  = int64(f.q.cfg.MaxFetchedSeriesPerQuery)
	)
	// Series and their chunk lists are carved out of slabs: one allocation per few
	// hundred series instead of two per series.
	var (
		seriesSlab []fetchedSeries
		chunkSlab  []rawChunk
	)
	dec := &seriesResponseDecoder{slabs: slabAllocator{pool: &f.q.slabs}}
	defer func() {
		f.slabsMu.Lock()
		f.slabs = append(f.slabs, dec.slabs.used...)
		f.slabsMu.Unlock()
	}()
	dec.onSeries = func(lset labels.Labels, chunks []rawChunk) error {
		if n := len(out); n > 0 {
			switch cmp := labels.Compare(out[n-1].lset, lset); {
			case cmp == 0:
				// A backend may split one series over several frames.
				out[n-1].add(chunks)
				return nil
			case cmp > 0:
				sorted = false
			}
		}
		if limit > 0 && f.fetched.Add(1) > limit {
			return &limitError{msg: fmt.Sprintf("the query exceeded the maximum number of series fetched (limit: %d series); narrow the selectors or time range, or raise -querier.max-fetched-series-per-query", limit)}
		}
		if len(seriesSlab) == 0 {
			seriesSlab = make([]fetchedSeries, 256)
		}
		fs := &seriesSlab[0]
		seriesSlab = seriesSlab[1:]
		n := len(chunks)
		if len(chunkSlab) < n {
			chunkSlab = make([]rawChunk, max(n, 4096))
		}
		// The capacity is capped, so a later append (split series) reallocates instead of
		// overwriting the next series' chunks.
		buf := chunkSlab[:0:n]
		chunkSlab = chunkSlab[n:]
		fs.init(lset, chunks, buf)
		out = append(out, fs)
		return nil
	}
	for {
		// RecvMsg instead of Recv: the codec hands the message bytes to the decoder, which
		// builds fetchedSeries directly.
		err := stream.RecvMsg(dec)
		if errors.Is(err, io.EOF) {
			break
		}
		if dec.stopErr != nil {
			return nil, nil, dec.stopErr
		}
		if err != nil {
			return nil, nil, fmt.Errorf("receive series: %w", err)
		}
	}
	if !sorted {
		out = sortAndCoalesce(out)
	}
	return out, dec.warnings, nil
}

// sortAndCoalesce sorts series by labels and merges entries with equal labels, for
// backends that do not stream in order.
func sortAndCoalesce(in []*fetchedSeries) []*fetchedSeries {
	slices.SortStableFunc(in, func(a, b *fetchedSeries) int { return labels.Compare(a.lset, b.lset) })
	out := in[:0]
	for _, s := range in {
		if n := len(out); n > 0 && labels.Equal(out[n-1].lset, s.lset) {
			prev := out[n-1]
			prev.chunks = append(prev.chunks, s.chunks...)
			slices.SortStableFunc(prev.chunks, cmpChunk)
			prev.overlapping = true
			continue
		}
		out = append(out, s)
	}
	return out
}

// Select implements storage.Querier.
func (f *fanoutQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, matchers ...*labels.Matcher) storage.SeriesSet {
	sets, warns, err := f.fetch(ctx, hints, matchers)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	limit := 0
	if hints != nil {
		limit = hints.Limit
	}
	ss := make([]storage.SeriesSet, 0, len(sets))
	for _, s := range sets {
		if len(s) > 0 {
			ss = append(ss, &listSeriesSet{series: s})
		}
	}
	if len(ss) == 1 {
		// Only one backend has data: its series are sorted and unique already, so the
		// merge (a heap and a merge function call per series) would change nothing.
		l := ss[0].(*listSeriesSet)
		if limit > 0 && len(l.series) > limit {
			l.series = l.series[:limit]
		}
		return withWarnings{SeriesSet: l, warns: warns}
	}
	return withWarnings{SeriesSet: storage.NewMergeSeriesSet(ss, limit, storage.ChainedSeriesMerge), warns: warns}
}

// withWarnings adds fan-out warnings (tolerated backend failures) to a series set.
type withWarnings struct {
	storage.SeriesSet
	warns annotations.Annotations
}

func (w withWarnings) Warnings() annotations.Annotations {
	ws := w.SeriesSet.Warnings()
	return ws.Merge(w.warns)
}

// LabelValues implements storage.Querier.
func (f *fanoutQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	pbms, err := storepb.PromMatchersToMatchers(matchers...)
	if err != nil {
		return nil, nil, fmt.Errorf("convert matchers: %w", err)
	}
	req := &storepb.LabelValuesRequest{
		Label: name, Start: f.mint, End: f.maxt, Matchers: pbms,
		PartialResponseDisabled: true, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
	}
	if hints != nil {
		req.Limit = int64(hints.Limit)
	}
	return f.collectStrings(ctx, hints, func(ctx context.Context, c Client) ([]string, []string, error) {
		resp, err := c.LabelValues(ctx, req)
		if err != nil {
			return nil, nil, fmt.Errorf("label values: %w", err)
		}
		return resp.Values, resp.Warnings, nil
	})
}

// LabelNames implements storage.Querier.
func (f *fanoutQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	pbms, err := storepb.PromMatchersToMatchers(matchers...)
	if err != nil {
		return nil, nil, fmt.Errorf("convert matchers: %w", err)
	}
	req := &storepb.LabelNamesRequest{
		Start: f.mint, End: f.maxt, Matchers: pbms,
		PartialResponseDisabled: true, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
	}
	if hints != nil {
		req.Limit = int64(hints.Limit)
	}
	return f.collectStrings(ctx, hints, func(ctx context.Context, c Client) ([]string, []string, error) {
		resp, err := c.LabelNames(ctx, req)
		if err != nil {
			return nil, nil, fmt.Errorf("label names: %w", err)
		}
		return resp.Names, resp.Warnings, nil
	})
}

// collectStrings fans a label call out and returns the sorted union of the answers.
func (f *fanoutQuerier) collectStrings(ctx context.Context, hints *storage.LabelHints, call func(context.Context, Client) ([]string, []string, error)) ([]string, annotations.Annotations, error) {
	var (
		mtx sync.Mutex
		all []string
		ws  []error
	)
	warns, err := f.q.fanOut(ctx, f.maxt, func(ctx context.Context, kind, addr string, c Client) error {
		vals, w, err := call(ctx, c)
		if err != nil {
			return err
		}
		mtx.Lock()
		defer mtx.Unlock()
		all = append(all, vals...)
		for _, s := range w {
			ws = append(ws, fmt.Errorf("%s %s: %s", kind, addr, s))
		}
		return nil
	})
	if err != nil {
		return nil, warns, err
	}
	for _, w := range ws {
		warns.Add(w)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	if hints != nil && hints.Limit > 0 && len(all) > hints.Limit {
		all = all[:hints.Limit]
	}
	return all, warns, nil
}

// Close implements storage.Querier.
// Close returns the query's receive buffers for reuse. The PromQL engine closes its
// querier only after evaluation, when no series of the query is iterated any more, and
// results hold copies of sample values, never chunk bytes.
func (f *fanoutQuerier) Close() error {
	f.slabsMu.Lock()
	defer f.slabsMu.Unlock()
	for _, s := range f.slabs {
		*s = (*s)[:0]
		f.q.slabs.Put(s)
	}
	f.slabs = nil
	return nil
}

// fanoutChunkQuerier is the chunk flavour, used by remote read and the Thanos StoreAPI.
type fanoutChunkQuerier struct{ fanoutQuerier }

// Select implements storage.ChunkQuerier.
func (f *fanoutChunkQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, matchers ...*labels.Matcher) storage.ChunkSeriesSet {
	sets, warns, err := f.fetch(ctx, hints, matchers)
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	ss := make([]storage.ChunkSeriesSet, 0, len(sets))
	for _, s := range sets {
		ss = append(ss, &listChunkSeriesSet{listSeriesSet{series: s}})
	}
	limit := 0
	if hints != nil {
		limit = hints.Limit
	}
	return withChunkWarnings{ChunkSeriesSet: storage.NewMergeChunkSeriesSet(ss, limit, storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)), warns: warns}
}

type withChunkWarnings struct {
	storage.ChunkSeriesSet
	warns annotations.Annotations
}

func (w withChunkWarnings) Warnings() annotations.Annotations {
	ws := w.ChunkSeriesSet.Warnings()
	return ws.Merge(w.warns)
}

// joinSelectors renders matcher sets as one PromQL expression ("{a="b"} or {c="d"}"), the
// form the exemplars StoreAPI takes.
func joinSelectors(sets [][]*labels.Matcher) string {
	parts := make([]string, 0, len(sets))
	for _, ms := range sets {
		strs := make([]string, 0, len(ms))
		for _, m := range ms {
			strs = append(strs, m.String())
		}
		parts = append(parts, "{"+strings.Join(strs, ", ")+"}")
	}
	return strings.Join(parts, " or ")
}
