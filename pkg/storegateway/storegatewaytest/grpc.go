package storegatewaytest

import (
	"net"
	"testing"

	"github.com/grafana/dskit/middleware"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// StartGRPC serves the services registered by register on 127.0.0.1:0, the way Vigil's
// shared gRPC server does (tenant from dskit org ID metadata, Vigil's gogo-aware codec), and
// returns its address. The server stops when the test ends.
func StartGRPC(tb testing.TB, register func(*grpc.Server)) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	opts := append(client.ServerOptions(),
		grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor),
		grpc.ChainStreamInterceptor(middleware.StreamServerUserHeaderInterceptor),
	)
	s := grpc.NewServer(opts...)
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	tb.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}
