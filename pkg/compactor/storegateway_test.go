package compactor

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
	"github.com/vigil-obs/vigil/pkg/storegateway"
	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
	"github.com/vigil-obs/vigil/pkg/util/grpcutil"
)

// TestCompactor_StoreGatewayServesSameDataAfterCompaction queries through a real
// store-gateway over gRPC before and after compaction: the answers are identical, and the
// gateway serves the compacted block instead of its marked sources.
func TestCompactor_StoreGatewayServesSameDataAfterCompaction(t *testing.T) {
	h := newHarness(t, nil, nil)
	for start := int64(0); start < 12*hour; start += 2 * hour {
		h.writeReplicas(start, 3)
	}
	h.writeReplicas(12*hour, 3)

	gwReg := prometheus.NewRegistry()
	gw, err := storegateway.New(storegateway.Config{DataDir: t.TempDir(), SyncInterval: time.Hour, ChunkCacheSize: 1 << 20}, h.bkt, nil, gwReg)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), gw) })
	addr := storegatewaytest.StartGRPC(t, func(s *grpc.Server) { gw.RegisterGRPC(s) })
	conn, err := grpc.NewClient(addr, client.DialOptions(client.DefaultConfig())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	store := grpcutil.NewStoreClient(conn, storegateway.StoreServiceName)

	syncGateway := func() {
		t.Helper()
		if err := gw.SyncNow(context.Background()); err != nil {
			t.Fatalf("store-gateway sync: %v", err)
		}
	}
	syncGateway()
	if n := gaugeValue(t, gwReg, "vigil_storegateway_blocks_loaded"); n != 21 {
		t.Fatalf("store-gateway serves %v blocks before compaction, want 21", n)
	}
	before := querySeries(t, store)

	h.now = time.UnixMilli(14*hour + 1)
	h.run()
	syncGateway()
	// The compacted block and the three replicas of the open window; the 18 marked
	// sources are still in the bucket but not served.
	if n := gaugeValue(t, gwReg, "vigil_storegateway_blocks_loaded"); n != 4 {
		t.Fatalf("store-gateway serves %v blocks after compaction, want 4", n)
	}
	after := querySeries(t, store)

	if len(before) != len(testSeries()) || len(after) != len(before) {
		t.Fatalf("series before %d, after %d, want %d", len(before), len(after), len(testSeries()))
	}
	for key, want := range before {
		got := after[key]
		if len(want) != 7*samplesPerBlock || len(got) != len(want) {
			t.Fatalf("%s: %d samples before, %d after, want %d", key, len(want), len(got), 7*samplesPerBlock)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s sample %d: %v after compaction, %v before", key, i, got[i], want[i])
			}
		}
	}
}

// querySeries reads every test series over StoreAPI and decodes its samples.
func querySeries(t *testing.T, store storepb.StoreClient) map[string][]sample {
	t.Helper()
	ms, err := storepb.PromMatchersToMatchers(labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(user.InjectOrgID(context.Background(), tenantA), time.Minute)
	defer cancel()
	stream, err := store.Series(ctx, &storepb.SeriesRequest{MinTime: 0, MaxTime: 100 * hour, Matchers: ms})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]sample{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("series: %v", err)
		}
		s := resp.GetSeries()
		if s == nil {
			continue // hints and warnings
		}
		key := client.PromLabelsFromZLabels(s.Labels).String()
		for _, c := range s.Chunks {
			enc, err := storeapi.EncodingFromPB(c.Raw.Type)
			if err != nil {
				t.Fatal(err)
			}
			chk, err := chunkenc.FromData(enc, c.Raw.Data)
			if err != nil {
				t.Fatal(err)
			}
			it := chk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				ts, f := it.At()
				out[key] = append(out[key], sample{t: ts, f: f})
			}
			if it.Err() != nil {
				t.Fatal(it.Err())
			}
		}
	}
}

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
