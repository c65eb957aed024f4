package distributor

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
)

// grpcIngester is an ingester gRPC endpoint with scripted behaviour, served
// with the real ingester service descriptor and codec, so the distributor's
// client side of the contract (tenant propagation, PushResponse decoding,
// status codes) is exercised over a real connection.
type grpcIngester struct {
	mu      sync.Mutex
	tenants []string
	series  int
	fail    error
}

func (g *grpcIngester) Push(ctx context.Context, req *prompb.WriteRequest) (*ingclient.PushResponse, error) {
	tenantID, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil {
		return nil, g.fail
	}
	g.tenants = append(g.tenants, tenantID)
	resp := &ingclient.PushResponse{}
	for _, ts := range req.Timeseries {
		if ts.Labels[0].Value == "too_old_metric" {
			resp.Rejections = append(resp.Rejections, ingclient.Rejection{
				Reason: ingclient.ReasonTooOld, Series: labelsString(ts.Labels),
				Message: "sample is older than the head's minimum valid time", Count: int64(len(ts.Samples)),
			})
			continue
		}
		g.series++
		resp.SamplesWritten += int64(len(ts.Samples))
	}
	return resp, nil
}

func startGRPCIngester(t *testing.T, g *grpcIngester) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(ingclient.ServerOptions(), grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor))
	srv := grpc.NewServer(opts...)
	ingclient.RegisterIngesterServer(srv, g)
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestPushOverRealIngesterClient(t *testing.T) {
	ings := []*grpcIngester{{}, {}, {}}
	var addrs []string
	for _, g := range ings {
		addrs = append(addrs, startGRPCIngester(t, g))
	}
	env := newTestEnv(t, envOptions{
		rf: 3, multiTenant: true, addrs: addrs,
		factory: ingclient.NewPoolFactory(ingclient.DefaultConfig()),
	})

	req := &prompb.WriteRequest{}
	now := time.Now().UnixMilli()
	for i := 0; i < 20; i++ {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels:  series("__name__", "up", "i", fmt.Sprint(i)),
			Samples: []prompb.Sample{{Value: 1, Timestamp: now}},
		})
	}
	req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
		Labels:  series("__name__", "too_old_metric"),
		Samples: []prompb.Sample{{Value: 1, Timestamp: now}},
	})
	h := map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "X-Scope-OrgID": "acme"}
	code, body, _ := env.post(t, "/api/v1/push", h, bytes.NewReader(encodeV1(t, req)))
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400 partial write: %s", code, body)
	}
	mustContain(t, body, ReasonTooOld, "too_old_metric", "older than the head", "-ingester.out-of-order-time-window")
	if got := env.discarded("acme", ReasonTooOld); got != 1 {
		t.Errorf("discarded too_old = %v, want 1 (replicas deduplicated)", got)
	}

	// Every healthy replica got every accepted series, under the tenant.
	// Pushes beyond quorum may still be in flight: poll with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, g := range ings {
			g.mu.Lock()
			if g.series != 20 {
				done = false
			}
			for _, tn := range g.tenants {
				if tn != "acme" {
					t.Errorf("ingester saw tenant %q", tn)
				}
			}
			g.mu.Unlock()
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replicas did not all receive the series")
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}

	// One replica failing with a gRPC error: quorum of 2 still holds.
	ings[2].mu.Lock()
	ings[2].fail = status.Error(codes.Unavailable, "ingester is shutting down")
	ings[2].mu.Unlock()
	req.Timeseries = req.Timeseries[:20]
	if code, body, _ := env.post(t, "/api/v1/push", h, bytes.NewReader(encodeV1(t, req))); code != http.StatusNoContent {
		t.Fatalf("one replica failing: %d %s", code, body)
	}
	// Two failing: 503, retryable.
	ings[1].mu.Lock()
	ings[1].fail = status.Error(codes.Unavailable, "ingester is shutting down")
	ings[1].mu.Unlock()
	code, body, _ = env.post(t, "/api/v1/push", h, bytes.NewReader(encodeV1(t, req)))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("two replicas failing: %d %s, want 503", code, body)
	}
	mustContain(t, body, "shutting down")
}
