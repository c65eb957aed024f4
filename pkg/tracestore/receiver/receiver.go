package receiver

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SpanConsumer sees every span the ingesters acknowledged, once per
// request, in the distributor (so before the per-ingester split, which
// would show it each span RF times); the derived-metrics generator
// implements it. It must not retain td.
type SpanConsumer interface {
	ConsumeTraces(ctx context.Context, tenant string, td ptrace.Traces)
}

// IngesterClient is the OTLP TraceService client of one ingester.
type IngesterClient interface {
	Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error)
	io.Closer
}

// ClientFactory dials an ingester by its ring address.
type ClientFactory func(addr string) (IngesterClient, error)

// Discard reasons, the `reason` label of vigil_discarded_spans_total.
const (
	ReasonRateLimited       = "rate_limited"
	ReasonSpanTooLarge      = "span_too_large"
	ReasonTooManyAttributes = "too_many_attributes"
	ReasonInvalidTraceID    = "invalid_trace_id"
	ReasonInvalidSpanID     = "invalid_span_id"
	ReasonIngesterRejected  = "ingester_rejected"
)

// Receiver accepts spans and writes them to the ingesters.
type Receiver struct {
	services.Service

	cfg       Config
	limits    Limits
	ring      ring.DoBatchRing
	generator SpanConsumer
	logger    *slog.Logger
	factory   ClientFactory
	// writeOp selects healthy ACTIVE ingesters, extending the replica set
	// past unhealthy ones, like the metrics write path.
	writeOp ring.Operation

	mtx      sync.Mutex
	clients  map[string]IngesterClient
	limiters map[string]*rate.Limiter

	receivedSpans  *prometheus.CounterVec
	discardedSpans *prometheus.CounterVec
}

// New builds a Receiver. generator may be nil (derived metrics off).
func New(cfg Config, limits Limits, r ring.DoBatchRing, factory ClientFactory, generator SpanConsumer, reg prometheus.Registerer, logger *slog.Logger) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("trace receiver config: %w", err)
	}
	if limits == nil || r == nil || factory == nil {
		return nil, errors.New("trace receiver: limits, ring and client factory are required")
	}
	rc := &Receiver{
		cfg:       cfg,
		limits:    limits,
		ring:      r,
		generator: generator,
		logger:    logger,
		factory:   factory,
		writeOp:   ring.NewOp([]ring.InstanceState{ring.ACTIVE}, func(s ring.InstanceState) bool { return s != ring.ACTIVE }),
		clients:   map[string]IngesterClient{},
		limiters:  map[string]*rate.Limiter{},
		receivedSpans: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_distributor_received_spans_total",
			Help: "Spans received by the trace receivers, before limits.",
		}, []string{"tenant", "protocol"}),
		discardedSpans: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_discarded_spans_total",
			Help: "Spans rejected at ingestion, by tenant and reason.",
		}, []string{"tenant", "reason"}),
	}
	rc.Service = services.NewIdleService(nil, rc.stopping)
	return rc, nil
}

func (r *Receiver) stopping(_ error) error {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	var errs []error
	for addr, c := range r.clients {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close ingester client %s: %w", addr, err))
		}
		delete(r.clients, addr)
	}
	return errors.Join(errs...)
}

// PushError is a rejection the client can act on. Code is an HTTP status;
// Msg names the limit and how to raise it.
type PushError struct {
	Code     int
	Reason   string
	Msg      string
	Accepted int // spans written despite the error (partial success)
	Rejected int
}

func (e *PushError) Error() string { return e.Msg }

// GRPCStatus maps the rejection to a gRPC status, so gRPC clients see the
// same message and retry semantics as HTTP clients.
func (e *PushError) GRPCStatus() *status.Status {
	c := codes.Internal
	switch {
	case e.Code == http.StatusTooManyRequests:
		c = codes.ResourceExhausted
	case e.Code == http.StatusUnauthorized:
		c = codes.Unauthenticated
	case e.Code == http.StatusRequestEntityTooLarge:
		c = codes.ResourceExhausted
	case e.Code >= 400 && e.Code < 500:
		c = codes.InvalidArgument
	case e.Code == http.StatusServiceUnavailable:
		c = codes.Unavailable
	}
	return status.New(c, e.Msg)
}

// PushResult reports a (possibly partially) successful push.
type PushResult struct {
	Accepted int
	Rejected int
	// Msg explains rejected spans when Rejected > 0.
	Msg string
}

// Push validates td for tenant, feeds the generator and writes accepted
// spans to the ingesters. A non-nil error means nothing was written unless
// it is a *PushError with Accepted > 0. td may be modified.
func (r *Receiver) Push(ctx context.Context, tenant, protocol string, td ptrace.Traces) (PushResult, error) {
	total := td.SpanCount()
	r.receivedSpans.WithLabelValues(tenant, protocol).Add(float64(total))
	if total == 0 {
		return PushResult{}, nil
	}
	rejected, msg := r.validate(tenant, td)
	accepted := total - rejected
	if accepted == 0 {
		return PushResult{}, &PushError{Code: http.StatusBadRequest, Reason: "invalid", Msg: msg, Rejected: rejected}
	}
	if lim := r.limiter(tenant); lim != nil && !lim.AllowN(time.Now(), accepted) {
		r.discardedSpans.WithLabelValues(tenant, ReasonRateLimited).Add(float64(accepted))
		return PushResult{}, &PushError{
			Code:     http.StatusTooManyRequests,
			Reason:   ReasonRateLimited,
			Rejected: total,
			Msg: fmt.Sprintf("ingestion rate limit (%g spans/s, burst %d) exceeded for tenant %q while pushing %d spans; retry later, or raise -%s / -%s (ingestion_rate_spans / ingestion_burst_size_spans in the runtime overrides)",
				r.limits.IngestionRateSpans(tenant), r.limits.IngestionBurstSizeSpans(tenant), tenant, accepted, flagRateSpans, flagBurstSpans),
		}
	}
	rej, err := r.shard(ctx, tenant, td)
	if err != nil {
		var pe *PushError
		if errors.As(err, &pe) {
			r.discardedSpans.WithLabelValues(tenant, ReasonIngesterRejected).Add(float64(accepted))
			pe.Rejected = total
			return PushResult{}, pe
		}
		return PushResult{}, &PushError{Code: http.StatusServiceUnavailable, Reason: "ingester_unavailable", Rejected: total,
			Msg: fmt.Sprintf("writing %d spans to ingesters failed: %v", accepted, err)}
	}
	if rej.spans > 0 {
		// Per-trace limits are enforced by the ingesters, which stored the
		// other traces of the request: a partial success.
		if rej.spans > accepted {
			rej.spans = accepted
		}
		accepted -= rej.spans
		rejected += rej.spans
		for reason, n := range rej.byReason {
			r.discardedSpans.WithLabelValues(tenant, reason).Add(float64(n))
		}
		if msg != "" {
			msg += "; "
		}
		msg += rej.msg
		if accepted == 0 {
			return PushResult{}, &PushError{Code: http.StatusBadRequest, Reason: rej.reason, Msg: msg, Rejected: rejected}
		}
	}
	// Derived metrics count acknowledged spans only: a batch that failed
	// here is retried by the client and would otherwise be counted twice.
	// (Spans an ingester refused by a per-trace limit are still counted:
	// td does not say which they were.)
	if r.generator != nil {
		r.generator.ConsumeTraces(ctx, tenant, td)
	}
	return PushResult{Accepted: accepted, Rejected: rejected, Msg: msg}, nil
}

// ingesterRejections collects per-trace limit rejections reported by
// ingesters that stored the rest of what they were sent.
type ingesterRejections struct {
	mtx      sync.Mutex
	spans    int
	byReason map[string]int
	reason   string // the first reason seen
	msg      string // the first message seen
}

func (ir *ingesterRejections) add(reason string, spans int, msg string) {
	ir.mtx.Lock()
	defer ir.mtx.Unlock()
	if ir.byReason == nil {
		ir.byReason = map[string]int{}
		ir.reason = reason
		ir.msg = msg
	}
	ir.byReason[reason] += spans
	ir.spans += spans
}

// perReplica scales counts reported by every replica of a trace back to
// spans: each rejected span is reported once per replica.
func (ir *ingesterRejections) perReplica(rf int) {
	if rf <= 1 {
		return
	}
	ir.spans = (ir.spans + rf - 1) / rf
	for k, v := range ir.byReason {
		ir.byReason[k] = (v + rf - 1) / rf
	}
}

// limiter returns the tenant's token bucket, following runtime changes of
// its limits; nil when the tenant is unlimited.
func (r *Receiver) limiter(tenant string) *rate.Limiter {
	limit := r.limits.IngestionRateSpans(tenant)
	if limit <= 0 {
		return nil
	}
	burst := r.limits.IngestionBurstSizeSpans(tenant)
	r.mtx.Lock()
	defer r.mtx.Unlock()
	lim, ok := r.limiters[tenant]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(limit), burst)
		r.limiters[tenant] = lim
		return lim
	}
	if lim.Limit() != rate.Limit(limit) {
		lim.SetLimit(rate.Limit(limit))
	}
	if lim.Burst() != burst {
		lim.SetBurst(burst)
	}
	return lim
}

// validate removes spans that break per-span limits or carry invalid IDs
// and returns how many were removed and why (the first reason of each kind).
func (r *Receiver) validate(tenant string, td ptrace.Traces) (int, string) {
	maxAttrs := r.limits.MaxAttributesPerSpan(tenant)
	maxBytes := r.limits.MaxSpanBytes(tenant)
	counts := map[string]int{}
	msgs := map[string]string{}
	reject := func(reason, msg string) {
		counts[reason]++
		if _, ok := msgs[reason]; !ok {
			msgs[reason] = msg
		}
	}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			sss.At(j).Spans().RemoveIf(func(s ptrace.Span) bool {
				switch {
				case s.TraceID().IsEmpty():
					reject(ReasonInvalidTraceID, fmt.Sprintf("span %q has an empty (all-zero) trace ID", s.Name()))
					return true
				case s.SpanID().IsEmpty():
					reject(ReasonInvalidSpanID, fmt.Sprintf("span %q of trace %s has an empty (all-zero) span ID", s.Name(), s.TraceID()))
					return true
				case maxAttrs > 0 && s.Attributes().Len() > maxAttrs:
					reject(ReasonTooManyAttributes, fmt.Sprintf("span %q of trace %s has %d attributes, the limit is %d; raise -%s (max_attributes_per_span in the runtime overrides)",
						s.Name(), s.TraceID(), s.Attributes().Len(), maxAttrs, flagMaxAttributes))
					return true
				}
				if maxBytes > 0 {
					if n := translate.SpanSize(s); n > maxBytes {
						reject(ReasonSpanTooLarge, fmt.Sprintf("span %q of trace %s is %d bytes, the limit is %d; raise -%s (max_span_bytes in the runtime overrides)",
							s.Name(), s.TraceID(), n, maxBytes, flagMaxSpanBytes))
						return true
					}
				}
				return false
			})
		}
	}
	if len(counts) == 0 {
		return 0, ""
	}
	reasons := make([]string, 0, len(counts))
	for reason := range counts {
		reasons = append(reasons, reason)
	}
	sort.Strings(reasons)
	total := 0
	msg := ""
	for _, reason := range reasons {
		n := counts[reason]
		total += n
		r.discardedSpans.WithLabelValues(tenant, reason).Add(float64(n))
		if msg != "" {
			msg += "; "
		}
		msg += fmt.Sprintf("%d span(s) rejected (%s), e.g. %s", n, reason, msgs[reason])
	}
	return total, msg
}

type spanRef struct{ rs, ss, sp int }

// shard writes each trace to its replica set. One key per trace: all spans
// of a trace land on the same ingesters, which is what trace-level limits
// and by-ID lookups rely on.
func (r *Receiver) shard(ctx context.Context, tenant string, td ptrace.Traces) (*ingesterRejections, error) {
	index := map[pcommon.TraceID]int{}
	var keys []uint32
	var groups [][]spanRef
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				id := spans.At(k).TraceID()
				g, ok := index[id]
				if !ok {
					g = len(groups)
					index[id] = g
					groups = append(groups, nil)
					keys = append(keys, TraceToken(tenant, id))
				}
				groups[g] = append(groups[g], spanRef{i, j, k})
			}
		}
	}
	// The write continues if the client goes away mid-request, and past
	// the quorum: DoBatch returns once enough replicas acknowledged, while
	// the remaining writes finish in the background. So the context is
	// detached from the request and cancelled only by DoBatch's Cleanup,
	// which runs after every callback has returned.
	ctx, cancel := context.WithTimeout(user.InjectOrgID(context.WithoutCancel(ctx), tenant), r.cfg.RemoteTimeout)
	rej := &ingesterRejections{}
	err := ring.DoBatchWithOptions(ctx, r.writeOp, r.ring, keys, func(inst ring.InstanceDesc, idx []int) error {
		c, err := r.client(inst.Addr)
		if err != nil {
			return err
		}
		// An ingester that gets every trace of the request (RF equal to the
		// ring size, or a single ingester) is sent the request as it is:
		// copying it span by span would cost as much as decoding it did.
		// Concurrent callbacks only read td.
		out := td
		if len(idx) != len(groups) {
			var refs []spanRef
			for _, g := range idx {
				refs = append(refs, groups[g]...)
			}
			out = subset(td, refs)
		}
		_, err = c.Export(ctx, ptraceotlp.NewExportRequestFromTraces(out))
		if err != nil {
			if reason, spans, ok := tracestore.RejectionReason(err); ok {
				// The ingester stored everything else durably: the write
				// succeeded for the quorum, with these spans refused.
				st, _ := status.FromError(err)
				rej.add(reason, spans, fmt.Sprintf("ingester %s: %s (raise -%s / -%s, max_spans_per_trace / max_bytes_per_trace in the runtime overrides)",
					inst.Addr, st.Message(), flagMaxSpansPerTrace, flagMaxBytesPerTrace))
				return nil
			}
			return classify(inst.Addr, err)
		}
		return nil
	}, ring.DoBatchOptions{IsClientError: isClientError, Cleanup: cancel})
	if err != nil {
		return nil, err
	}
	rej.perReplica(r.ring.ReplicationFactor())
	return rej, nil
}

// TraceToken is the ring token of a trace: fnv32a(tenant + trace ID bytes).
func TraceToken(tenant string, id pcommon.TraceID) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant)) // hash.Hash never fails
	_, _ = h.Write(id[:])
	return h.Sum32()
}

// subset copies the referenced spans into a new Traces, keeping their
// resources and scopes.
func subset(td ptrace.Traces, refs []spanRef) ptrace.Traces {
	sort.Slice(refs, func(a, b int) bool {
		x, y := refs[a], refs[b]
		if x.rs != y.rs {
			return x.rs < y.rs
		}
		if x.ss != y.ss {
			return x.ss < y.ss
		}
		return x.sp < y.sp
	})
	out := ptrace.NewTraces()
	lastRS, lastSS := -1, -1
	var rsOut ptrace.ResourceSpans
	var ssOut ptrace.ScopeSpans
	for _, ref := range refs {
		rs := td.ResourceSpans().At(ref.rs)
		if ref.rs != lastRS {
			rsOut = out.ResourceSpans().AppendEmpty()
			rs.Resource().CopyTo(rsOut.Resource())
			rsOut.SetSchemaUrl(rs.SchemaUrl())
			lastRS, lastSS = ref.rs, -1
		}
		ss := rs.ScopeSpans().At(ref.ss)
		if ref.ss != lastSS {
			ssOut = rsOut.ScopeSpans().AppendEmpty()
			ss.Scope().CopyTo(ssOut.Scope())
			ssOut.SetSchemaUrl(ss.SchemaUrl())
			lastSS = ref.ss
		}
		ss.Spans().At(ref.sp).CopyTo(ssOut.Spans().AppendEmpty())
	}
	return out
}

func (r *Receiver) client(addr string) (IngesterClient, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if c, ok := r.clients[addr]; ok {
		return c, nil
	}
	c, err := r.factory(addr)
	if err != nil {
		return nil, fmt.Errorf("dial ingester %s: %w", addr, err)
	}
	r.clients[addr] = c
	return c, nil
}

// classify turns an ingester's gRPC rejection of bad data into a PushError
// the client sees as 4xx; anything else stays an error that counts against
// the quorum.
func classify(addr string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("push to ingester %s: %w", addr, err)
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition:
		return &PushError{Code: http.StatusBadRequest, Reason: ReasonIngesterRejected, Msg: fmt.Sprintf("ingester %s rejected spans: %s", addr, st.Message())}
	case codes.ResourceExhausted:
		return &PushError{Code: http.StatusTooManyRequests, Reason: ReasonIngesterRejected, Msg: fmt.Sprintf("ingester %s rejected spans: %s", addr, st.Message())}
	}
	return fmt.Errorf("push to ingester %s: %w", addr, err)
}

func isClientError(err error) bool {
	var pe *PushError
	return errors.As(err, &pe) && pe.Code >= 400 && pe.Code < 500
}
