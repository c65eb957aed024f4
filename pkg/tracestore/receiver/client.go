package receiver

import (
	"context"
	"fmt"

	"github.com/grafana/dskit/middleware"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type grpcIngesterClient struct {
	client ptraceotlp.GRPCClient
	conn   *grpc.ClientConn
}

func (c *grpcIngesterClient) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	resp, err := c.client.Export(ctx, req)
	if err != nil {
		return resp, fmt.Errorf("export to %s: %w", c.conn.Target(), err)
	}
	return resp, nil
}

func (c *grpcIngesterClient) Close() error { return c.conn.Close() }

// NewGRPCClientFactory dials ingesters' OTLP TraceService on their ring
// address, forwarding the tenant from the context as X-Scope-OrgID
// metadata. Extra dial options (TLS, keepalive) may be appended.
func NewGRPCClientFactory(opts ...grpc.DialOption) ClientFactory {
	return func(addr string) (IngesterClient, error) {
		all := append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithChainUnaryInterceptor(middleware.ClientUserHeaderInterceptor),
		}, opts...)
		conn, err := grpc.NewClient(addr, all...)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return &grpcIngesterClient{client: ptraceotlp.NewGRPCClient(conn), conn: conn}, nil
	}
}
