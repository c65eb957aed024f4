package querier

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester"
	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
)

type noLimits struct{}

func (noLimits) MaxSeriesPerTenant(string) int             { return 0 }
func (noLimits) MaxSeriesPerMetric(string) int             { return 0 }
func (noLimits) OutOfOrderTimeWindow(string) time.Duration { return 0 }

// exemplarSeries is the series that carries exemplars in pushed fixtures.
var exemplarSeries = map[string]string{"__name__": "http_requests_total", "job": "api", "instance": "i0", "code": "200", "method": "get"}

// startRealIngester runs pkg/ingester on a loopback gRPC port, registered in the ring
// behind kvClient, and returns its address.
func startRealIngester(tb testing.TB, kvClient *consul.Client, id string) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	cfg := ingester.DefaultConfig()
	cfg.DataDir = tb.TempDir()
	cfg.ShipperDisabled = true
	// Keep the pushed fixture in the head for the whole test: it is months old, so a head
	// compaction (idle timeout, or the periodic check on slow machines) would cut it into
	// blocks subject to local retention and the queries would race with that.
	cfg.CompactionInterval = 1000 * time.Hour
	cfg.HeadCompactionIdleTimeout = 0
	cfg.RetentionPeriod = 100 * 24 * time.Hour
	cfg.Ring.InstanceID = id
	cfg.Ring.InstanceAddr = "127.0.0.1"
	cfg.Ring.InstancePort, _ = strconv.Atoi(port)
	ing, err := ingester.New(cfg, noLimits{}, newBucket(tb), kvClient, nil, prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	opts := append(client.ServerOptions(),
		grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor),
		grpc.ChainStreamInterceptor(middleware.StreamServerUserHeaderInterceptor),
	)
	srv := grpc.NewServer(opts...)
	ing.RegisterGRPC(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = services.StopAndAwaitTerminated(context.Background(), ing)
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// pushFixture writes the samples with mint <= t < maxt through the ingester's Push API in
// time order (the head only accepts samples near its newest one), plus exemplars and
// metadata.
func pushFixture(tb testing.TB, addr string, series []testSeries, mint, maxt int64) {
	tb.Helper()
	c, err := client.New(addr, client.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	ctx := user.InjectOrgID(context.Background(), testTenant)
	const window = 20 * 60_000
	for from := mint; from < maxt; from += window {
		to := min(from+window, maxt)
		req := &prompb.WriteRequest{}
		if from == mint {
			req.Metadata = []prompb.MetricMetadata{
				{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests served."},
				{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "cpu_usage", Help: "CPU in use.", Unit: "ratio"},
			}
		}
		for _, s := range series {
			ts := prompb.TimeSeries{}
			s.lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
			isExemplarSeries := labels.Equal(s.lset, labels.FromMap(exemplarSeries))
			for _, smp := range s.samples {
				if smp.t < from || smp.t >= to {
					continue
				}
				switch {
				case smp.h != nil:
					ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(smp.t, smp.h))
				case smp.fh != nil:
					ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(smp.t, smp.fh))
				default:
					ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: smp.t, Value: smp.f})
					if isExemplarSeries && ((smp.t-t0)/scrapeMs)%40 == 0 {
						ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{
							Labels:    []prompb.Label{{Name: "trace_id", Value: fmt.Sprintf("%016x", smp.t)}},
							Value:     smp.f,
							Timestamp: smp.t,
						})
					}
				}
			}
			if len(ts.Samples)+len(ts.Histograms) > 0 {
				req.Timeseries = append(req.Timeseries, ts)
			}
		}
		resp, err := c.Push(ctx, req)
		if err != nil {
			tb.Fatalf("push [%d,%d): %v", from, to, err)
		}
		if n := resp.RejectedCount(); n > 0 {
			tb.Fatalf("push [%d,%d): %d samples rejected: %+v", from, to, n, resp)
		}
	}
}

// ringEnv is a real ingester ring (in-memory KV) with one real ingester.
type ringEnv struct {
	kv   *consul.Client
	ring *ring.Ring
}

func newRingEnv(tb testing.TB) *ringEnv {
	tb.Helper()
	kvClient, closer := consul.NewInMemoryClient(ring.GetCodec(), logutil.GoKit(slog.New(slog.DiscardHandler)), nil)
	tb.Cleanup(func() { _ = closer.Close() })
	var rc ring.Config
	flagext.DefaultValues(&rc)
	rc.ReplicationFactor = 1
	r, err := NewIngesterRing(rc, kvClient, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &ringEnv{kv: kvClient, ring: r}
}

// startQuerierOnRing starts a querier that finds ingesters through the ring and waits
// until it sees want of them.
func startQuerierOnRing(tb testing.TB, cfg Config, env *ringEnv, storeGateways []string, want int) *Querier {
	tb.Helper()
	q, err := New(cfg, Deps{
		Ingesters:     RingAddresses{Ring: env.ring},
		StoreGateways: StaticAddresses(storeGateways),
		Subservices:   []services.Service{env.ring},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), q); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), q) })
	deadline := time.Now().Add(2 * time.Minute)
	for {
		addrs, _, err := q.ingesters.Addresses(context.Background())
		if err == nil && len(addrs) == want {
			return q
		}
		if time.Now().After(deadline) {
			tb.Fatalf("ring shows %v (err %v), want %d ingesters", addrs, err, want)
		}
		// Ring updates arrive through the KV watch: poll until the deadline.
		<-time.After(50 * time.Millisecond)
	}
}
