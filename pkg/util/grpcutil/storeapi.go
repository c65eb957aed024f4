package grpcutil

import (
	"context"

	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
)

// Service names of the Thanos StoreAPI and Info API.
const (
	ThanosStoreService = "thanos.Store"
	ThanosInfoService  = "thanos.info.Info"
)

// RegisterStoreAPI serves srv's Thanos StoreAPI and Info API on s under the given service
// names. Thanos' generated Register functions only take a *grpc.Server and only the
// standard names; this takes any registrar and any name, so several StoreAPIs can share
// one server (see RenamingConn for the client side).
func RegisterStoreAPI(s grpc.ServiceRegistrar, storeName, infoName string, srv interface {
	storepb.StoreServer
	infopb.InfoServer
}) {
	s.RegisterService(storeServiceDesc(storeName), srv)
	s.RegisterService(infoServiceDesc(infoName), srv)
}

func storeServiceDesc(name string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*storepb.StoreServer)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "LabelNames", Handler: unaryHandler(name, "LabelNames", func(srv any, ctx context.Context, in *storepb.LabelNamesRequest) (any, error) {
				return srv.(storepb.StoreServer).LabelNames(ctx, in)
			})},
			{MethodName: "LabelValues", Handler: unaryHandler(name, "LabelValues", func(srv any, ctx context.Context, in *storepb.LabelValuesRequest) (any, error) {
				return srv.(storepb.StoreServer).LabelValues(ctx, in)
			})},
		},
		Streams: []grpc.StreamDesc{{
			StreamName:    "Series",
			ServerStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				in := new(storepb.SeriesRequest)
				if err := stream.RecvMsg(in); err != nil {
					return err
				}
				return srv.(storepb.StoreServer).Series(in, seriesStream{stream})
			},
		}},
		Metadata: "store/storepb/rpc.proto",
	}
}

func infoServiceDesc(name string) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*infopb.InfoServer)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Info", Handler: unaryHandler(name, "Info", func(srv any, ctx context.Context, in *infopb.InfoRequest) (any, error) {
				return srv.(infopb.InfoServer).Info(ctx, in)
			})},
		},
		Metadata: "info/infopb/rpc.proto",
	}
}

// unaryHandler builds a grpc.MethodDesc handler for a request type, with interceptors applied
// the way generated code applies them.
func unaryHandler[Req any](service, method string, call func(srv any, ctx context.Context, in *Req) (any, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	fullMethod := "/" + service + "/" + method
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return call(srv, ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return call(srv, ctx, req.(*Req))
		})
	}
}

type seriesStream struct{ grpc.ServerStream }

func (s seriesStream) Send(m *storepb.SeriesResponse) error { return s.ServerStream.SendMsg(m) }

// NewStoreClient returns a StoreAPI client for the service registered as serviceName (see
// RegisterStoreAPI).
func NewStoreClient(cc grpc.ClientConnInterface, serviceName string) storepb.StoreClient {
	return storeClient{cc: cc, prefix: "/" + serviceName + "/"}
}

type storeClient struct {
	cc     grpc.ClientConnInterface
	prefix string
}

func (c storeClient) Series(ctx context.Context, in *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	desc := &grpc.StreamDesc{StreamName: "Series", ServerStreams: true}
	stream, err := c.cc.NewStream(ctx, desc, c.prefix+"Series", opts...)
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(in); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return seriesClientStream{stream}, nil
}

func (c storeClient) LabelNames(ctx context.Context, in *storepb.LabelNamesRequest, opts ...grpc.CallOption) (*storepb.LabelNamesResponse, error) {
	out := new(storepb.LabelNamesResponse)
	if err := c.cc.Invoke(ctx, c.prefix+"LabelNames", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

func (c storeClient) LabelValues(ctx context.Context, in *storepb.LabelValuesRequest, opts ...grpc.CallOption) (*storepb.LabelValuesResponse, error) {
	out := new(storepb.LabelValuesResponse)
	if err := c.cc.Invoke(ctx, c.prefix+"LabelValues", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

type seriesClientStream struct{ grpc.ClientStream }

func (s seriesClientStream) Recv() (*storepb.SeriesResponse, error) {
	m := new(storepb.SeriesResponse)
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

// NewInfoClient returns an Info API client for the service registered as serviceName.
func NewInfoClient(cc grpc.ClientConnInterface, serviceName string) infopb.InfoClient {
	return infoClient{cc: cc, method: "/" + serviceName + "/Info"}
}

type infoClient struct {
	cc     grpc.ClientConnInterface
	method string
}

func (c infoClient) Info(ctx context.Context, in *infopb.InfoRequest, opts ...grpc.CallOption) (*infopb.InfoResponse, error) {
	out := new(infopb.InfoResponse)
	if err := c.cc.Invoke(ctx, c.method, in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}
