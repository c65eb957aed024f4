package receiver

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/vigil-obs/vigil/pkg/util/tenant"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	// OTLP exporters, the Collector's among them, compress with gzip by
	// default; the gRPC server can only decode what is registered.
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	ctProtobuf = "application/x-protobuf"
	ctJSON     = "application/json"
)

func (r *Receiver) handleOTLP(w http.ResponseWriter, req *http.Request) {
	mt := mediaType(req)
	if mt != ctProtobuf && mt != ctJSON {
		// The OTLP/HTTP spec answers errors in the request's encoding; with
		// an unknown one, plain text is all a client can read.
		http.Error(w, fmt.Sprintf("unsupported Content-Type %q: use application/x-protobuf or application/json", req.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	tn, body, err := r.readBody(req)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			writeOTLPError(w, mt, he.code, he.msg)
			return
		}
		writeOTLPError(w, mt, http.StatusInternalServerError, err.Error())
		return
	}
	exp := ptraceotlp.NewExportRequest()
	if mt == ctJSON {
		err = exp.UnmarshalJSON(body)
	} else {
		err = exp.UnmarshalProto(body)
	}
	if err != nil {
		writeOTLPError(w, mt, http.StatusBadRequest, fmt.Sprintf("malformed OTLP %s traces request: %v", mt, err))
		return
	}
	res, err := r.Push(req.Context(), tn, "otlp_http", exp.Traces())
	if err != nil {
		var pe *PushError
		if errors.As(err, &pe) {
			writeOTLPError(w, mt, pe.Code, pe.Msg)
			return
		}
		writeOTLPError(w, mt, http.StatusInternalServerError, err.Error())
		return
	}
	resp := ptraceotlp.NewExportResponse()
	if res.Rejected > 0 {
		// OTLP partial success: 200, with the count and the reason, so the
		// exporter logs it and does not resend the accepted spans.
		resp.PartialSuccess().SetRejectedSpans(int64(res.Rejected))
		resp.PartialSuccess().SetErrorMessage(res.Msg)
	}
	var out []byte
	if mt == ctJSON {
		out, err = resp.MarshalJSON()
	} else {
		out, err = resp.MarshalProto()
	}
	if err != nil {
		writeOTLPError(w, mt, http.StatusInternalServerError, fmt.Sprintf("encode response: %v", err))
		return
	}
	w.Header().Set("Content-Type", mt)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// writeOTLPError answers with a google.rpc.Status in the request's encoding,
// as the OTLP/HTTP specification requires; its message names the limit.
func writeOTLPError(w http.ResponseWriter, mt string, code int, msg string) {
	st := &spb.Status{Code: int32(httpToGRPC(code)), Message: msg}
	var (
		b   []byte
		err error
	)
	if mt == ctJSON {
		b, err = protojson.Marshal(st)
	} else {
		b, err = proto.Marshal(st)
	}
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	w.Header().Set("Content-Type", mt)
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		// OTLP exporters back off by Retry-After when it is present.
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func httpToGRPC(code int) codes.Code {
	return (&PushError{Code: code}).GRPCStatus().Code()
}

// otlpGRPC adapts the receiver to the OTLP TraceService.
type otlpGRPC struct {
	ptraceotlp.UnimplementedGRPCServer
	r *Receiver
}

// RegisterOTLPGRPC registers the OTLP TraceService on the OTLP gRPC listener
// (4317), next to the metrics service the distributor registers there. Not
// for the internal gRPC server: the ingester serves TraceService there.
func (r *Receiver) RegisterOTLPGRPC(s *grpc.Server) {
	ptraceotlp.RegisterGRPCServer(s, &otlpGRPC{r: r})
}

func (g *otlpGRPC) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	tn, err := g.r.grpcTenant(ctx)
	if err != nil {
		return ptraceotlp.NewExportResponse(), err
	}
	res, err := g.r.Push(ctx, tn, "otlp_grpc", req.Traces())
	if err != nil {
		return ptraceotlp.NewExportResponse(), err
	}
	resp := ptraceotlp.NewExportResponse()
	if res.Rejected > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(res.Rejected))
		resp.PartialSuccess().SetErrorMessage(res.Msg)
	}
	return resp, nil
}

// grpcTenant reads the tenant from X-Scope-OrgID (or THANOS-TENANT) gRPC
// metadata. It does not rely on dskit's server interceptor because the
// public OTLP and Jaeger listeners are not the internal gRPC server.
func (r *Receiver) grpcTenant(ctx context.Context) (string, error) {
	if !r.cfg.MultiTenancyEnabled {
		return tenant.Default, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var id string
	for _, h := range []string{tenant.OrgIDHeader, tenant.ThanosHeader} {
		if v := md.Get(h); len(v) > 0 && v[0] != "" {
			id = v[0]
			break
		}
	}
	if id == "" {
		return "", status.Error(codes.Unauthenticated, tenant.ErrMissing.Error())
	}
	if err := tenant.Validate(id); err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	return id, nil
}
