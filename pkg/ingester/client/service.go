package client

import (
	"context"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
)

// ServiceName is the fully-qualified gRPC service name of the ingester write API.
const ServiceName = "vigil.ingester.Ingester"

// PushMethod is the full gRPC method name of Push.
const PushMethod = "/" + ServiceName + "/Push"

// IngesterServer is the server side of vigil.ingester.Ingester.
type IngesterServer interface {
	Push(ctx context.Context, req *prompb.WriteRequest) (*PushResponse, error)
}

// ServiceDesc returns the hand-written descriptor of vigil.ingester.Ingester
// (equivalent of what protoc-gen-go-grpc would generate for
// `service Ingester { rpc Push(prometheus.WriteRequest) returns (PushResponse); }`).
// It is a function rather than a package variable so callers cannot mutate shared state.
func ServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: ServiceName,
		HandlerType: (*IngesterServer)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Push",
			Handler:    pushHandler,
		}},
		Streams:  []grpc.StreamDesc{},
		Metadata: "vigil/ingester.proto",
	}
}

// RegisterIngesterServer registers srv on s.
func RegisterIngesterServer(s grpc.ServiceRegistrar, srv IngesterServer) {
	s.RegisterService(ServiceDesc(), srv)
}

func pushHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(prompb.WriteRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(IngesterServer).Push(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: PushMethod}
	handler := func(ctx context.Context, req any) (any, error) {
		return srv.(IngesterServer).Push(ctx, req.(*prompb.WriteRequest))
	}
	return interceptor(ctx, in, info, handler)
}

// PusherClient is the client side of vigil.ingester.Ingester.
type PusherClient interface {
	Push(ctx context.Context, in *prompb.WriteRequest, opts ...grpc.CallOption) (*PushResponse, error)
}

type pusherClient struct {
	cc grpc.ClientConnInterface
}

// NewPusherClient returns a Push client on an existing connection. The connection must
// use Codec (see DialOptions) or the server must accept plain protobuf.
func NewPusherClient(cc grpc.ClientConnInterface) PusherClient {
	return &pusherClient{cc: cc}
}

func (c *pusherClient) Push(ctx context.Context, in *prompb.WriteRequest, opts ...grpc.CallOption) (*PushResponse, error) {
	out := new(PushResponse)
	if err := c.cc.Invoke(ctx, PushMethod, in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}
