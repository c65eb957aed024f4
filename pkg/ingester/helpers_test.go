package ingester

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

type fixedLimits struct {
	perTenant, perMetric int
	ooo                  time.Duration
}

func (l fixedLimits) MaxSeriesPerTenant(string) int             { return l.perTenant }
func (l fixedLimits) MaxSeriesPerMetric(string) int             { return l.perMetric }
func (l fixedLimits) OutOfOrderTimeWindow(string) time.Duration { return l.ooo }

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Ring.InstanceID = "ingester-test"
	return cfg
}

// startIngester starts an ingester and stops it at cleanup.
func startIngester(t testing.TB, cfg Config, limits Limits, bkt objstore.Bucket) *Ingester {
	t.Helper()
	ing, err := New(cfg, limits, bkt, nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
			t.Error(err)
		}
	})
	return ing
}

// serveGRPC serves ing on a loopback port the way cmd/vigil does and returns a client.
func serveGRPC(t testing.TB, ing *Ingester) client.IngesterClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(client.ServerOptions(),
		grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor),
		grpc.ChainStreamInterceptor(middleware.StreamServerUserHeaderInterceptor),
	)
	srv := grpc.NewServer(opts...)
	ing.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c, err := client.New(lis.Addr().String(), client.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxFor(tenant string) context.Context {
	return user.InjectOrgID(context.Background(), tenant)
}

func series(lbls []string, samples ...prompb.Sample) prompb.TimeSeries {
	ts := prompb.TimeSeries{Samples: samples}
	for i := 0; i < len(lbls); i += 2 {
		ts.Labels = append(ts.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	return ts
}

type querySample struct {
	t  int64
	v  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

type queriedSeries struct {
	lset    labels.Labels
	samples []querySample
}

// querySeries runs Series over gRPC the way the querier does (batched responses) and
// decodes every chunk.
func querySeries(t testing.TB, c client.IngesterClient, tenant string, mint, maxt int64, ms ...storepb.LabelMatcher) []queriedSeries {
	t.Helper()
	stream, err := c.Series(ctxFor(tenant), &storepb.SeriesRequest{MinTime: mint, MaxTime: maxt, Matchers: ms, ResponseBatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	var out []queriedSeries
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if w := resp.GetWarning(); w != "" {
			t.Fatalf("warning: %s", w)
		}
		var batch []*storepb.Series
		if b := resp.GetBatch(); b != nil {
			batch = b.Series
		}
		if s := resp.GetSeries(); s != nil {
			batch = append(batch, s)
		}
		for _, s := range batch {
			out = append(out, decodeSeries(t, s, mint, maxt))
		}
	}
	return out
}

func decodeSeries(t testing.TB, s *storepb.Series, mint, maxt int64) queriedSeries {
	t.Helper()
	qs := queriedSeries{lset: client.PromLabelsFromZLabels(s.Labels)}
	for _, ch := range s.Chunks {
		var enc chunkenc.Encoding
		switch ch.Raw.Type {
		case storepb.Chunk_XOR:
			enc = chunkenc.EncXOR
		case storepb.Chunk_HISTOGRAM:
			enc = chunkenc.EncHistogram
		case storepb.Chunk_FLOAT_HISTOGRAM:
			enc = chunkenc.EncFloatHistogram
		}
		chk, err := chunkenc.FromData(enc, ch.Raw.Data)
		if err != nil {
			t.Fatal(err)
		}
		it := chk.Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if ts := it.AtT(); ts < mint || ts > maxt {
				continue
			}
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				qs.samples = append(qs.samples, querySample{t: ts, v: v})
			case chunkenc.ValHistogram:
				ts, h := it.AtHistogram(nil)
				qs.samples = append(qs.samples, querySample{t: ts, h: h})
			case chunkenc.ValFloatHistogram:
				ts, fh := it.AtFloatHistogram(nil)
				qs.samples = append(qs.samples, querySample{t: ts, fh: fh})
			}
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	return qs
}

func eqMatcher(name, value string) storepb.LabelMatcher {
	return storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: name, Value: value}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}
