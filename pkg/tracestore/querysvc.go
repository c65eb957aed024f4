package tracestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/grafana/dskit/user"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The head query service is a single unary gRPC method whose request and
// response are JSON documents wrapped in google.protobuf.BytesValue. That
// keeps the wire protocol hand-written (no code generation) while using the
// default proto codec, so no global codec registration is needed and it
// shares the ingester's gRPC server with everything else.
const (
	queryServiceName = "vigil.tracestore.HeadQuery"
	queryMethod      = "/" + queryServiceName + "/Query"
)

// maxQueryResponseBytes bounds a head query response (a whole trace).
const maxQueryResponseBytes = 512 << 20

const (
	opTraceByID       = "trace_by_id"
	opSearch          = "search"
	opServices        = "services"
	opOperations      = "operations"
	opDependencies    = "dependencies"
	opAttributeKeys   = "attribute_keys"
	opAttributeValues = "attribute_values"
)

type queryRequest struct {
	Op       string         `json:"op"`
	TraceID  TraceID        `json:"trace_id,omitempty"`
	Search   *SearchRequest `json:"search,omitempty"`
	Service  string         `json:"service,omitempty"`
	SpanKind string         `json:"span_kind,omitempty"`
	Key      string         `json:"key,omitempty"`
	Start    time.Time      `json:"start"`
	End      time.Time      `json:"end"`
}

type queryResponse struct {
	Found      bool             `json:"found,omitempty"`
	Traces     []byte           `json:"traces,omitempty"` // OTLP protobuf
	Summaries  []TraceSummary   `json:"summaries,omitempty"`
	Strings    []string         `json:"strings,omitempty"`
	Operations []Operation      `json:"operations,omitempty"`
	Links      []DependencyLink `json:"links,omitempty"`
}

// queryHandler is the HandlerType of the service descriptor.
type queryHandler interface {
	query(ctx context.Context, req *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type queryServer struct{ r Reader }

func queryServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: queryServiceName,
		HandlerType: (*queryHandler)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Query",
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := srv.(queryHandler)
				if icpt == nil {
					return h.query(ctx, in)
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: queryMethod}
				return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					return h.query(ctx, req.(*wrapperspb.BytesValue))
				})
			},
		}},
		Metadata: "vigil/tracestore/headquery",
	}
}

// RegisterQueryServer serves r (normally a TraceIngester's head) to queriers.
// The tenant comes from the gRPC metadata, so the server must run dskit's
// middleware.ServerUserHeaderInterceptor (installed on the shared server).
func RegisterQueryServer(s *grpc.Server, r Reader) {
	s.RegisterService(queryServiceDesc(), queryServer{r: r})
}

func (s queryServer) query(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	var req queryRequest
	if err := json.Unmarshal(in.GetValue(), &req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode head query: %v", err)
	}
	var resp queryResponse
	var err error
	switch req.Op {
	case opTraceByID:
		var td ptrace.Traces
		td, resp.Found, err = s.r.TraceByID(ctx, req.TraceID, req.Start, req.End)
		if err == nil && resp.Found {
			resp.Traces, err = (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
		}
	case opSearch:
		if req.Search == nil {
			return nil, status.Error(codes.InvalidArgument, "search request missing")
		}
		resp.Summaries, err = s.r.Search(ctx, *req.Search)
	case opServices:
		resp.Strings, err = s.r.Services(ctx, req.Start, req.End)
	case opOperations:
		resp.Operations, err = s.r.Operations(ctx, req.Service, req.SpanKind, req.Start, req.End)
	case opDependencies:
		resp.Links, err = s.r.Dependencies(ctx, req.Start, req.End)
	case opAttributeKeys:
		resp.Strings, err = s.r.AttributeKeys(ctx, req.Start, req.End)
	case opAttributeValues:
		resp.Strings, err = s.r.AttributeValues(ctx, req.Key, req.Start, req.End)
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown head query op %q", req.Op)
	}
	if err != nil {
		code := codes.Internal
		if errors.Is(err, ErrInvalidRequest) {
			code = codes.InvalidArgument
		}
		return nil, status.Error(code, err.Error())
	}
	b, err := json.Marshal(&resp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode head query response: %v", err)
	}
	return wrapperspb.Bytes(b), nil
}

// NewQueryClient returns a Reader that queries a remote ingester's head over
// cc. The tenant in ctx is forwarded in the gRPC metadata.
func NewQueryClient(cc grpc.ClientConnInterface) Reader { return queryClient{cc: cc} }

type queryClient struct{ cc grpc.ClientConnInterface }

func (c queryClient) call(ctx context.Context, req queryRequest) (*queryResponse, error) {
	ctx, err := user.InjectIntoGRPCRequest(ctx)
	if err != nil {
		return nil, fmt.Errorf("head query: %w", err)
	}
	b, err := json.Marshal(&req)
	if err != nil {
		return nil, fmt.Errorf("encode head query: %w", err)
	}
	out := new(wrapperspb.BytesValue)
	// Large traces exceed gRPC's default 4 MiB receive limit.
	if err := c.cc.Invoke(ctx, queryMethod, wrapperspb.Bytes(b), out, grpc.MaxCallRecvMsgSize(maxQueryResponseBytes)); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
			return nil, fmt.Errorf("%w: %s", ErrInvalidRequest, st.Message())
		}
		return nil, fmt.Errorf("head query %s: %w", req.Op, err)
	}
	var resp queryResponse
	if err := json.Unmarshal(out.GetValue(), &resp); err != nil {
		return nil, fmt.Errorf("decode head query response: %w", err)
	}
	return &resp, nil
}

func (c queryClient) TraceByID(ctx context.Context, id TraceID, start, end time.Time) (ptrace.Traces, bool, error) {
	resp, err := c.call(ctx, queryRequest{Op: opTraceByID, TraceID: id, Start: start, End: end})
	if err != nil || !resp.Found {
		return ptrace.NewTraces(), false, err
	}
	td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(resp.Traces)
	if err != nil {
		return ptrace.NewTraces(), false, fmt.Errorf("decode trace %s from head: %w", id, err)
	}
	return td, true, nil
}

func (c queryClient) Search(ctx context.Context, req SearchRequest) ([]TraceSummary, error) {
	resp, err := c.call(ctx, queryRequest{Op: opSearch, Search: &req})
	if err != nil {
		return nil, err
	}
	return resp.Summaries, nil
}

func (c queryClient) Services(ctx context.Context, start, end time.Time) ([]string, error) {
	resp, err := c.call(ctx, queryRequest{Op: opServices, Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return resp.Strings, nil
}

func (c queryClient) Operations(ctx context.Context, service, spanKind string, start, end time.Time) ([]Operation, error) {
	resp, err := c.call(ctx, queryRequest{Op: opOperations, Service: service, SpanKind: spanKind, Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return resp.Operations, nil
}

func (c queryClient) Dependencies(ctx context.Context, start, end time.Time) ([]DependencyLink, error) {
	resp, err := c.call(ctx, queryRequest{Op: opDependencies, Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return resp.Links, nil
}

func (c queryClient) AttributeKeys(ctx context.Context, start, end time.Time) ([]string, error) {
	resp, err := c.call(ctx, queryRequest{Op: opAttributeKeys, Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return resp.Strings, nil
}

func (c queryClient) AttributeValues(ctx context.Context, key string, start, end time.Time) ([]string, error) {
	resp, err := c.call(ctx, queryRequest{Op: opAttributeValues, Key: key, Start: start, End: end})
	if err != nil {
		return nil, err
	}
	return resp.Strings, nil
}
