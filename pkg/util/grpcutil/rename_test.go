package grpcutil

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestRenamedServiceReachableOnlyUnderNewName: the same service registered twice on one
// server, once renamed, answers under both names, each with its own implementation.
func TestRenamedServiceReachableOnlyUnderNewName(t *testing.T) {
	renames := map[string]string{"grpc.health.v1.Health": "vigil.test.Health"}
	srv := grpc.NewServer()
	plain, renamed := health.NewServer(), health.NewServer()
	plain.SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	renamed.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	grpc_health_v1.RegisterHealthServer(srv, plain)
	grpc_health_v1.RegisterHealthServer(RenamingRegistrar{Registrar: srv, Renames: renames}, renamed)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	got, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err != nil || got.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("original name: %v %v", got, err)
	}
	got, err = grpc_health_v1.NewHealthClient(RenamingConn{Conn: conn, Renames: renames}).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err != nil || got.Status != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("renamed: %v %v", got, err)
	}
	_, err = grpc_health_v1.NewHealthClient(RenamingConn{Conn: conn, Renames: map[string]string{"grpc.health.v1.Health": "nope.Health"}}).Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown renamed service: %v, want Unimplemented", err)
	}
}
