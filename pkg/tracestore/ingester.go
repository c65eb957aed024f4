package tracestore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IngesterConfig configures the trace head.
type IngesterConfig struct {
	DataDir          string        `yaml:"data_dir"`
	MaxBlockDuration time.Duration `yaml:"max_block_duration"`
	MaxBlockBytes    int64         `yaml:"max_block_bytes"`
	TraceIdlePeriod  time.Duration `yaml:"trace_idle_period"`
	CutCheckInterval time.Duration `yaml:"cut_check_interval"`
	RowGroupSpans    int           `yaml:"row_group_spans"`
	RetainFlushed    time.Duration `yaml:"retain_flushed"`
	FlushOnShutdown  bool          `yaml:"flush_on_shutdown"`
}

// RegisterFlags registers the trace head flags.
func (c *IngesterConfig) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.DataDir, "traces.data-dir", "./data", "Directory for trace WALs; each tenant's WAL lives in <dir>/traces/<tenant>/wal.")
	f.DurationVar(&c.MaxBlockDuration, "traces.max-block-duration", 30*time.Minute, "Cut a trace block when the head is this old.")
	f.Int64Var(&c.MaxBlockBytes, "traces.max-block-bytes", 256<<20, "Cut a trace block when the head holds this many bytes of spans.")
	f.DurationVar(&c.TraceIdlePeriod, "traces.trace-idle-period", 10*time.Second, "At a block cut, traces that received spans within this period move to the next block so traces are not split.")
	f.DurationVar(&c.CutCheckInterval, "traces.cut-check-interval", 10*time.Second, "How often the head checks whether to cut a block.")
	f.IntVar(&c.RowGroupSpans, "traces.block-row-group-spans", 4096, "Target spans per Parquet row group; a trace-by-ID lookup reads one row group.")
	f.BoolVar(&c.FlushOnShutdown, "traces.flush-on-shutdown", false, "Cut and upload every head on shutdown (for scaling ingesters down); otherwise the WAL is replayed on the next start.")
	f.DurationVar(&c.RetainFlushed, "traces.retain-flushed", 2*time.Minute, "Keep flushed head blocks queryable this long, covering the queriers' block sync interval.")
}

// Validate checks the config.
func (c *IngesterConfig) Validate() error {
	if c.DataDir == "" {
		return errors.New("traces.data-dir: must not be empty")
	}
	if c.MaxBlockDuration <= 0 {
		return errors.New("traces.max-block-duration: must be positive")
	}
	if c.MaxBlockBytes <= 0 {
		return errors.New("traces.max-block-bytes: must be positive")
	}
	if c.CutCheckInterval <= 0 {
		return errors.New("traces.cut-check-interval: must be positive")
	}
	return nil
}

// TraceIngester is the trace head of an ingester: it serves the OTLP
// TraceService the distributors push to, keeps a WAL per tenant, groups spans
// by trace, cuts blocks to the bucket and answers head queries (it implements
// Reader for its own head).
type TraceIngester struct {
	services.Service
	ptraceotlp.UnimplementedGRPCServer

	cfg    IngesterConfig
	bkt    objstore.Bucket
	limits Limits
	logger *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	heads map[string]*tenantHead

	cutCh chan struct{}

	spansIn    *prometheus.CounterVec
	discarded  *prometheus.CounterVec
	blocksOut  prometheus.Counter
	flushFails prometheus.Counter
}

// NewTraceIngester builds the trace head. bkt is the root bucket; blocks go to
// <tenant>/traces/<ULID>/.
func NewTraceIngester(cfg IngesterConfig, bkt objstore.Bucket, limits Limits, logger *slog.Logger, reg prometheus.Registerer) (*TraceIngester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if limits == nil {
		limits = StaticLimits(0, 0)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &TraceIngester{
		cfg: cfg, bkt: bkt, limits: limits, logger: logger, now: time.Now,
		heads: map[string]*tenantHead{},
		cutCh: make(chan struct{}, 1),
		spansIn: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingester_spans_received_total", Help: "Spans accepted into the trace head.",
		}, []string{"tenant"}),
		discarded: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingester_discarded_spans_total", Help: "Spans the trace head rejected, by reason.",
		}, []string{"tenant", "reason"}),
		blocksOut: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingester_trace_blocks_flushed_total", Help: "Trace blocks uploaded to the bucket.",
		}),
		flushFails: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingester_trace_block_flush_failures_total", Help: "Failed trace block uploads (retried).",
		}),
	}
	// Head size for dashboards and alerts: computed at scrape time so the
	// push path pays nothing for it.
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_ingester_trace_head_bytes", Help: "Bytes of spans held in trace heads (current and not yet uploaded blocks).",
	}, func() float64 {
		var n int64
		for _, h := range i.tenantHeads() {
			n += h.curBytes() + h.pendingBytes()
		}
		return float64(n)
	})
	i.Service = services.NewBasicService(i.starting, i.running, i.stopping)
	return i, nil
}

// RegisterGRPC registers the OTLP TraceService (push) and the head query
// service on s.
func (i *TraceIngester) RegisterGRPC(s *grpc.Server) {
	ptraceotlp.RegisterGRPCServer(s, i)
	RegisterQueryServer(s, i)
}

// RegisterHTTP mounts POST /ingester/flush-traces, which cuts and uploads
// every tenant's head (tests, and before scaling an ingester down).
func (i *TraceIngester) RegisterHTTP(r *mux.Router) {
	r.Handle("/ingester/flush-traces", http.HandlerFunc(i.flushHandler)).Methods(http.MethodPost)
}

func (i *TraceIngester) flushHandler(w http.ResponseWriter, r *http.Request) {
	if err := i.FlushAll(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (i *TraceIngester) walDir(tenant string) string {
	return filepath.Join(i.cfg.DataDir, "traces", tenant, "wal")
}

func (i *TraceIngester) starting(ctx context.Context) error {
	root := filepath.Join(i.cfg.DataDir, "traces")
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("list trace WAL dirs: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || validateTenant(e.Name()) != nil {
			continue
		}
		if _, err := i.headFor(e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// headFor returns the tenant's head, opening (and replaying) its WAL on first use.
func (i *TraceIngester) headFor(tenant string) (*tenantHead, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if h, ok := i.heads[tenant]; ok {
		return h, nil
	}
	dir := i.walDir(tenant)
	w, segs, err := openWAL(dir)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	h := &tenantHead{tenant: tenant, cur: newHeadBlock(i.now()), wal: w}
	seen := map[TraceID]map[[8]byte]struct{}{}
	for _, seg := range segs {
		dropped, err := replaySegment(segmentName(dir, seg), func(payload []byte) error {
			req := ptraceotlp.NewExportRequest()
			if err := req.UnmarshalProto(payload); err != nil {
				return fmt.Errorf("decode record: %w", err)
			}
			h.replay(tracesToRows(req.Traces()), i.now(), seen)
			return nil
		})
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("tenant %s: %w", tenant, err)
		}
		if dropped > 0 {
			i.logger.Warn("dropped torn WAL tail (never acknowledged)", "tenant", tenant, "segment", seg, "bytes", dropped)
		}
	}
	i.heads[tenant] = h
	return h, nil
}

// Export implements the OTLP TraceService. It returns after the accepted
// spans are fsynced to the tenant's WAL.
func (i *TraceIngester) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	resp := ptraceotlp.NewExportResponse()
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return resp, status.Error(codes.Unauthenticated, err.Error())
	}
	td := req.Traces()
	rows := tracesToRows(td)
	if len(rows) == 0 {
		return resp, nil
	}
	h, err := i.headFor(tenant)
	if err != nil {
		return resp, status.Error(codes.Internal, err.Error())
	}
	if pending := h.pendingBytes(); pending > 2*i.cfg.MaxBlockBytes {
		// Uploads are failing: refuse (retryably) instead of growing the
		// head until the process runs out of memory.
		return resp, status.Errorf(codes.ResourceExhausted, "tenant %s: %d bytes of trace blocks wait for upload to object storage; retry later", tenant, pending)
	}
	h.cutMu.RLock()
	defer h.cutMu.RUnlock()
	accepted, rejected := h.admit(rows, i.limits, i.now())
	if len(rejected) > 0 {
		td.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
			rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
				ss.Spans().RemoveIf(func(s ptrace.Span) bool { return !accepted[TraceID(s.TraceID())] })
				return ss.Spans().Len() == 0
			})
			return rs.ScopeSpans().Len() == 0
		})
	}
	if len(accepted) > 0 {
		payload, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
		if err != nil {
			return resp, status.Error(codes.Internal, fmt.Sprintf("encode WAL record: %v", err))
		}
		if err := h.wal.Append(payload); err != nil {
			return resp, status.Error(codes.Unavailable, fmt.Sprintf("tenant %s: %v", tenant, err))
		}
		i.spansIn.WithLabelValues(tenant).Add(float64(td.SpanCount()))
	}
	if h.curBytes() >= i.cfg.MaxBlockBytes {
		select {
		case i.cutCh <- struct{}{}:
		default:
		}
	}
	if len(rejected) > 0 {
		return resp, i.rejectionError(tenant, rejected)
	}
	return resp, nil
}

// pendingBytes is the size of frozen blocks not yet uploaded.
func (t *tenantHead) pendingBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, b := range t.flushing {
		n += b.bytes
	}
	return n
}

func (t *tenantHead) curBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur.bytes
}

// rejectionError builds a FailedPrecondition status whose message starts with
// the reason and whose ErrorInfo detail carries it, so distributors can map it
// to HTTP 4xx and count vigil_discarded_spans_total{reason}.
func (i *TraceIngester) rejectionError(tenant string, rejected []rejection) error {
	msgs := make([]string, 0, len(rejected))
	spans := 0
	for _, r := range rejected {
		i.discarded.WithLabelValues(tenant, r.reason).Add(float64(r.spans))
		spans += r.spans
		if len(msgs) < 5 {
			msgs = append(msgs, r.detail)
		}
	}
	reason := rejected[0].reason
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("%s: rejected %d spans: %s", reason, spans, strings.Join(msgs, "; ")))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: reason, Domain: errorDomain,
		Metadata: map[string]string{"rejected_spans": fmt.Sprint(spans)},
	}); err == nil {
		st = d
	}
	return st.Err()
}

const errorDomain = "vigil.tracestore"

// RejectionReason extracts the limit reason (ReasonMaxSpansPerTrace,
// ReasonTraceTooLarge) and the number of rejected spans from an Export error;
// ok is false for other errors. Spans of other traces in the same request
// were accepted and are durable.
func RejectionReason(err error) (reason string, spans int, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.FailedPrecondition {
		return "", 0, false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.Domain == errorDomain {
			_, _ = fmt.Sscan(info.Metadata["rejected_spans"], &spans)
			return info.Reason, spans, true
		}
	}
	return "", 0, false
}

func (i *TraceIngester) running(ctx context.Context) error {
	t := time.NewTicker(i.cfg.CutCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = i.cutDue(ctx, false)
		case <-i.cutCh:
			_ = i.cutDue(ctx, false)
		}
	}
}

func (i *TraceIngester) stopping(_ error) error {
	var errs []error
	if i.cfg.FlushOnShutdown {
		if err := i.FlushAll(context.Background()); err != nil {
			// The WAL still has everything; it is replayed on the next start.
			errs = append(errs, fmt.Errorf("flush on shutdown: %w", err))
		}
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for tenant, h := range i.heads {
		if err := h.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
		}
	}
	return errors.Join(errs...)
}

func (i *TraceIngester) tenantHeads() map[string]*tenantHead {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make(map[string]*tenantHead, len(i.heads))
	for k, v := range i.heads {
		out[k] = v
	}
	return out
}

// cutDue cuts heads that are old or big enough (or all, when force) and
// uploads pending blocks. Errors are logged; the data stays in the WAL and
// the upload is retried on the next tick.
func (i *TraceIngester) cutDue(ctx context.Context, force bool) error {
	var errs []error
	for tenant, h := range i.tenantHeads() {
		if err := i.flushTenant(ctx, h, force); err != nil {
			i.flushFails.Inc()
			i.logger.Error("trace block flush failed", "tenant", tenant, "err", err)
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
		}
	}
	return errors.Join(errs...)
}

// FlushAll cuts every tenant's head (including traces still receiving spans)
// and uploads the blocks before returning.
func (i *TraceIngester) FlushAll(ctx context.Context) error {
	return i.cutDue(ctx, true)
}

func (i *TraceIngester) flushTenant(ctx context.Context, h *tenantHead, force bool) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	now := i.now()
	h.mu.Lock()
	due := h.cur.spans > 0 && (force || now.Sub(h.cur.created) >= i.cfg.MaxBlockDuration || h.cur.bytes >= i.cfg.MaxBlockBytes)
	h.mu.Unlock()
	if due {
		if err := i.cut(h, force, now); err != nil {
			return err
		}
	}
	if err := i.uploadPending(ctx, h); err != nil {
		return err
	}
	h.dropFlushed(now.Add(-i.cfg.RetainFlushed))
	return nil
}

// cut freezes the current head block and starts a new one on a new WAL
// segment. Unless force, traces that are still active move to the new block
// (re-logged to its segment first) so a trace is not split across blocks.
func (i *TraceIngester) cut(h *tenantHead, force bool, now time.Time) error {
	h.cutMu.Lock() // no pushes until the swap is done
	defer h.cutMu.Unlock()
	seg, err := h.wal.Rotate()
	if err != nil {
		return fmt.Errorf("rotate WAL: %w", err)
	}
	h.mu.Lock()
	frozen := h.cur
	h.mu.Unlock()
	// Holding cutMu exclusively, nothing mutates frozen; reading it is safe.
	var carry []TraceID
	var carried []spanRow
	if !force && i.cfg.TraceIdlePeriod > 0 && now.Sub(frozen.created) < 2*i.cfg.MaxBlockDuration {
		// Under heavy load most traces are "active"; carrying at most a
		// quarter of a block keeps size-triggered cuts effective.
		budget := i.cfg.MaxBlockBytes / 4
		for id, lt := range frozen.traces {
			if now.Sub(lt.lastAppend) < i.cfg.TraceIdlePeriod && int64(lt.bytes) <= budget {
				budget -= int64(lt.bytes)
				carry = append(carry, id)
				carried = append(carried, lt.rows...)
			}
		}
	}
	if len(carried) > 0 {
		// The carried spans must be in the new segment before the old ones
		// can be deleted; if that fails they simply stay in the frozen block.
		if err := relog(h.wal, carried); err != nil {
			i.logger.Warn("could not carry active traces to the next block", "tenant", h.tenant, "err", err)
			carry = nil
		}
	}
	next := newHeadBlock(now)
	h.mu.Lock()
	for _, id := range carry {
		lt := frozen.traces[id]
		next.add(id, lt.rows, lt.bytes, lt.lastAppend)
		delete(frozen.traces, id)
		frozen.spans -= len(lt.rows)
		frozen.bytes -= int64(lt.bytes)
	}
	frozen.lastSeg = seg
	h.cur = next
	h.flushing = append(h.flushing, frozen)
	h.mu.Unlock()
	return nil
}

func relog(w *wal, rows []spanRow) error {
	td, err := rowsToTraces(rows)
	if err != nil {
		return err
	}
	payload, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return w.Append(payload)
}

// uploadPending uploads frozen blocks oldest first. WAL segments are deleted
// only up to the last uploaded block, so a failed upload keeps its data (and
// that of every later block) in the WAL.
func (i *TraceIngester) uploadPending(ctx context.Context, h *tenantHead) error {
	for {
		h.mu.Lock()
		if len(h.flushing) == 0 {
			h.mu.Unlock()
			return nil
		}
		b := h.flushing[0]
		h.mu.Unlock()
		if b.spans > 0 {
			if err := i.uploadHeadBlock(ctx, h.tenant, b); err != nil {
				return err
			}
		}
		h.mu.Lock()
		h.flushing = h.flushing[1:]
		if b.spans > 0 && i.cfg.RetainFlushed > 0 {
			b.flushedAt = i.now()
			h.flushed = append(h.flushed, b)
		}
		h.mu.Unlock()
		if err := h.wal.Truncate(b.lastSeg); err != nil {
			return err
		}
	}
}

func (i *TraceIngester) uploadHeadBlock(ctx context.Context, tenant string, b *headBlock) error {
	// Trace by trace in ID order: only one trace's spans are copied at a
	// time, not the whole head.
	ids := make([]TraceID, 0, len(b.traces))
	for id := range b.traces {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, c int) bool { return compareBytes(ids[a][:], ids[c][:]) < 0 })
	id := ulid.MustNew(ulid.Timestamp(i.now()), ulid.DefaultEntropy())
	bb := newBlockBuilder(id, tenant, i.cfg.RowGroupSpans, 1, nil)
	for _, tid := range ids {
		tr := append([]spanRow(nil), b.traces[tid].rows...)
		sortRows(tr)
		if err := bb.addTrace(dedupSorted(tr)); err != nil {
			return fmt.Errorf("build block %s: %w", id, err)
		}
	}
	built, err := bb.finish()
	if err != nil {
		return fmt.Errorf("build block %s: %w", id, err)
	}
	if err := uploadBlock(ctx, bucket.ForTenant(i.bkt, tenant), built); err != nil {
		return err
	}
	i.blocksOut.Inc()
	i.logger.Info("uploaded trace block", "tenant", tenant, "block", id, "spans", built.meta.Spans, "traces", built.meta.Traces,
		"bytes", built.meta.fileSize(blockDataFile))
	return nil
}

// tenantFromContext reads and validates the tenant.
func tenantFromContext(ctx context.Context) (string, error) {
	tenant, err := user.ExtractOrgID(ctx)
	if err != nil {
		// Without dskit's server interceptor the tenant is still in the
		// incoming gRPC metadata.
		var merr error
		if tenant, _, merr = user.ExtractFromGRPCRequest(ctx); merr != nil {
			return "", fmt.Errorf("no tenant in request: %w", err)
		}
	}
	if err := validateTenant(tenant); err != nil {
		return "", err
	}
	return tenant, nil
}

// validateTenant applies the tenant ID contract (no '/', '..', control
// characters; at most 150 bytes) before the ID becomes a path.
func validateTenant(id string) error {
	if id == "" || len(id) > 150 {
		return fmt.Errorf("invalid tenant ID %q: must be 1 to 150 bytes", id)
	}
	if id == "." || strings.Contains(id, "..") || strings.ContainsAny(id, `/\`) {
		return fmt.Errorf("invalid tenant ID %q: must not contain '/' or '..'", id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("invalid tenant ID %q: control character", id)
		}
	}
	return nil
}
