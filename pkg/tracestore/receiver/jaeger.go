package receiver

import (
	"context"
	"fmt"

	model "github.com/jaegertracing/jaeger-idl/model/v1"
	"github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type jaegerCollector struct {
	r *Receiver
}

// RegisterJaegerGRPC registers jaeger.api_v2.CollectorService and
// SamplingManager on the Jaeger gRPC listener (14250). That server must be
// built with JaegerServerOptions(): the Jaeger messages are gogo-generated.
func (r *Receiver) RegisterJaegerGRPC(s *grpc.Server) {
	api_v2.RegisterCollectorServiceServer(s, &jaegerCollector{r: r})
	api_v2.RegisterSamplingManagerServer(s, samplingManager{})
}

// defaultSamplingRate is what a Jaeger collector without a strategies file
// hands out.
const defaultSamplingRate = 0.001

// samplingManager answers the sampling-strategy polls of Jaeger agents and
// SDKs pointed at the collector port, so they sample as they would against
// a stock Jaeger collector instead of logging errors on every poll.
type samplingManager struct{}

func (samplingManager) GetSamplingStrategy(_ context.Context, req *api_v2.SamplingStrategyParameters) (*api_v2.SamplingStrategyResponse, error) {
	if req.ServiceName == "" {
		return nil, status.Error(codes.InvalidArgument, "serviceName is required")
	}
	return &api_v2.SamplingStrategyResponse{
		StrategyType:          api_v2.SamplingStrategyType_PROBABILISTIC,
		ProbabilisticSampling: &api_v2.ProbabilisticSamplingStrategy{SamplingRate: defaultSamplingRate},
	}, nil
}

// JaegerServerOptions returns the options the Jaeger gRPC server needs.
func JaegerServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(GogoCodec{})}
}

func (j *jaegerCollector) PostSpans(ctx context.Context, req *api_v2.PostSpansRequest) (*api_v2.PostSpansResponse, error) {
	tn, err := j.r.grpcTenant(ctx)
	if err != nil {
		return nil, err
	}
	td, err := jaegertranslator.ProtoToTraces([]*model.Batch{&req.Batch})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("invalid jaeger batch: %v", err))
	}
	res, err := j.r.Push(ctx, tn, "jaeger_grpc", td)
	if err != nil {
		return nil, err
	}
	if res.Rejected > 0 {
		// api_v2 has no partial success; the accepted spans are stored and
		// the error explains the rest.
		return nil, status.Error(codes.InvalidArgument, fmt.Sprintf("accepted %d of %d spans: %s", res.Accepted, res.Accepted+res.Rejected, res.Msg))
	}
	return &api_v2.PostSpansResponse{}, nil
}
