package client

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type recordingMetricsServer struct {
	*pmetricotlp.UnimplementedGRPCServer
	got chan pmetric.Metrics
}

func (s recordingMetricsServer) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	s.got <- req.Metrics()
	return pmetricotlp.NewExportResponse(), nil
}

// TestCodecServesOTLP: a server forced onto Vigil's codec still serves OpenTelemetry's
// OTLP gRPC services, whose pdata messages are neither gogo nor google protobuf types.
func TestCodecServesOTLP(t *testing.T) {
	srv := grpc.NewServer(ServerOptions()...)
	rec := recordingMetricsServer{UnimplementedGRPCServer: &pmetricotlp.UnimplementedGRPCServer{}, got: make(chan pmetric.Metrics, 1)}
	pmetricotlp.RegisterGRPCServer(srv, rec)
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
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("requests")
	m.SetEmptySum().DataPoints().AppendEmpty().SetIntValue(7)
	if _, err := pmetricotlp.NewGRPCClient(conn).Export(context.Background(), pmetricotlp.NewExportRequestFromMetrics(md)); err != nil {
		t.Fatalf("export through the forced codec: %v", err)
	}
	got := <-rec.got
	if got.MetricCount() != 1 || got.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Name() != "requests" {
		t.Fatalf("received %d metrics", got.MetricCount())
	}
}
