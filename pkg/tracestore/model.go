// Package tracestore is Vigil's trace storage engine: the trace head in the
// ingester (WAL, spans grouped by trace, block cutting), the Parquet trace block
// format in object storage, the compactor for trace blocks and the read path
// (trace by ID, search, services, operations, dependencies) that merges
// ingester heads and bucket blocks.
//
// This file holds the read/query model other packages (the Jaeger, Zipkin and
// Tempo query APIs) code against. It is deliberately small and stable.
//
// Wiring (cmd/vigil):
//
//	ingester:  ing, _ := NewTraceIngester(ingCfg, bkt, overrides, logger, reg)
//	           ing.RegisterGRPC(grpcServer)   // OTLP TraceService (push) + head query service
//	           ing.RegisterHTTP(router)       // POST /ingester/flush-traces
//	           run ing as a dskit service
//	querier:   heads := NewAddrHeadSource(RingAddrs(ingesterRing))  // or StaticHeads(ing) in-process
//	           q, _ := NewQuerier(qCfg, bkt, heads, logger, reg)     // q is the Reader for the query APIs
//	           run q as a dskit service
//	compactor: c, _ := NewTraceCompactor(cCfg, bkt, logger, reg); run c as a dskit service
//
// bkt is the root bucket (bucket.NewClient); tenants are prefixed inside.
// The gRPC server must run dskit's middleware.ServerUserHeaderInterceptor.
package tracestore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TraceID is a 128-bit trace ID. It is convertible to and from pcommon.TraceID.
type TraceID [16]byte

// String returns the 32 lower-case hex characters of the ID.
func (id TraceID) String() string { return hex.EncodeToString(id[:]) }

// IsEmpty reports whether all bytes are zero (an invalid trace ID in OTLP).
func (id TraceID) IsEmpty() bool { return id == TraceID{} }

// ErrInvalidTraceID is returned (wrapped) by ParseTraceID.
var ErrInvalidTraceID = errors.New("invalid trace ID")

// ParseTraceID parses a hex trace ID of 1 to 32 characters. Shorter IDs are
// left-padded with zeros because Jaeger and Zipkin clients emit 64-bit IDs as
// 16 hex characters and some drop leading zeros. The all-zero ID is rejected.
func ParseTraceID(s string) (TraceID, error) {
	var id TraceID
	if len(s) == 0 || len(s) > 32 {
		return id, fmt.Errorf("%w %q: want 1 to 32 hex characters", ErrInvalidTraceID, s)
	}
	padded := strings.Repeat("0", 32-len(s)) + s
	if _, err := hex.Decode(id[:], []byte(padded)); err != nil {
		return TraceID{}, fmt.Errorf("%w %q: %v", ErrInvalidTraceID, s, err)
	}
	if id.IsEmpty() {
		return TraceID{}, fmt.Errorf("%w %q: all zeros", ErrInvalidTraceID, s)
	}
	return id, nil
}

// Span kinds as used in Operation.SpanKind and SearchRequest.SpanKind. They are
// the lower-case names Jaeger's query API uses; matching is case-insensitive.
const (
	SpanKindUnspecified = "unspecified"
	SpanKindInternal    = "internal"
	SpanKindServer      = "server"
	SpanKindClient      = "client"
	SpanKindProducer    = "producer"
	SpanKindConsumer    = "consumer"
)

// SpanKindString maps an OTLP span kind to the strings above.
func SpanKindString(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindInternal:
		return SpanKindInternal
	case ptrace.SpanKindServer:
		return SpanKindServer
	case ptrace.SpanKindClient:
		return SpanKindClient
	case ptrace.SpanKindProducer:
		return SpanKindProducer
	case ptrace.SpanKindConsumer:
		return SpanKindConsumer
	default:
		return SpanKindUnspecified
	}
}

// SearchRequest selects traces. Every field is optional; a trace matches when
// at least one of its spans satisfies all span-level conditions (Service,
// Operation, SpanKind, Attributes) and the trace satisfies the trace-level ones
// (duration, time range). Service is NOT required: attributes, duration or the
// time range alone are valid searches.
type SearchRequest struct {
	Service   string // resource service.name of the matching span
	Operation string // span name
	SpanKind  string // one of the SpanKind* constants; "" = any
	// Attributes must all match on the same span. Span attributes are checked
	// first, then resource attributes. An empty value means "key present".
	// Values compare as strings (ints/bools/doubles in their canonical text form).
	Attributes  map[string]string
	MinDuration time.Duration // trace duration (root span, or first start to last end)
	MaxDuration time.Duration // 0 = no upper bound
	Start, End  time.Time     // trace overlaps [Start, End]; zero = unbounded
	Limit       int           // <= 0 means DefaultSearchLimit
}

// DefaultSearchLimit is used when SearchRequest.Limit <= 0.
const DefaultSearchLimit = 20

// ErrInvalidRequest is returned (wrapped) for search parameters that can never
// match (e.g. MinDuration > MaxDuration, End before Start). API layers map it
// to 400.
var ErrInvalidRequest = errors.New("invalid request")

// Validate checks the request for contradictions.
func (r SearchRequest) Validate() error {
	if r.MinDuration < 0 || r.MaxDuration < 0 {
		return fmt.Errorf("%w: durations must not be negative", ErrInvalidRequest)
	}
	if r.MaxDuration > 0 && r.MinDuration > r.MaxDuration {
		return fmt.Errorf("%w: min duration %s exceeds max duration %s", ErrInvalidRequest, r.MinDuration, r.MaxDuration)
	}
	if !r.Start.IsZero() && !r.End.IsZero() && r.End.Before(r.Start) {
		return fmt.Errorf("%w: end %s is before start %s", ErrInvalidRequest, r.End, r.Start)
	}
	return nil
}

// TraceSummary describes one trace without its spans.
type TraceSummary struct {
	TraceID       TraceID
	RootService   string // "" when the root span has not been received
	RootOperation string
	Start         time.Time     // earliest span start
	Duration      time.Duration // latest span end - Start
	SpanCount     int
	ErrorCount    int      // spans with status code Error
	Services      []string // sorted, distinct
}

// Operation is a span name as seen for a service, with its kind.
type Operation struct {
	Name     string
	SpanKind string
}

// DependencyLink is an edge in the service graph: Parent called Child
// CallCount times (a span of Child whose parent span belongs to Parent,
// counted once per child span), ErrorCount of which had status Error.
type DependencyLink struct {
	Parent     string
	Child      string
	CallCount  uint64
	ErrorCount uint64
}

// Reader is the query side of the trace store. Every method is scoped to the
// tenant in ctx (github.com/grafana/dskit/user.ExtractOrgID); a context without
// a tenant is an error. Zero start/end times mean "unbounded". Results are
// deterministic: lists are sorted, searches newest first (by trace start, ties
// broken by trace ID).
type Reader interface {
	// TraceByID returns all spans of the trace, merged from every source with
	// replicas deduplicated by span ID. found is false when no span is known.
	TraceByID(ctx context.Context, id TraceID, start, end time.Time) (td ptrace.Traces, found bool, err error)
	// Search returns at most req.Limit summaries, newest first.
	Search(ctx context.Context, req SearchRequest) ([]TraceSummary, error)
	// Services lists service names, sorted.
	Services(ctx context.Context, start, end time.Time) ([]string, error)
	// Operations lists the operations of a service, sorted by name then kind.
	// spanKind "" means any kind.
	Operations(ctx context.Context, service, spanKind string, start, end time.Time) ([]Operation, error)
	// Dependencies returns the service graph edges, sorted by parent, child.
	Dependencies(ctx context.Context, start, end time.Time) ([]DependencyLink, error)
	// AttributeKeys lists span and resource attribute keys (Zipkin autocomplete), sorted.
	AttributeKeys(ctx context.Context, start, end time.Time) ([]string, error)
	// AttributeValues lists common values of an attribute key, sorted. The list
	// is bounded (high-cardinality values such as IDs are not indexed).
	AttributeValues(ctx context.Context, key string, start, end time.Time) ([]string, error)
}
