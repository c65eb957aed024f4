package querier

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
)

// TestThanosStoreEndpoint talks to the querier the way a Thanos Querier does: standard
// thanos.Store / thanos.info.Info services, tenant in THANOS-TENANT metadata, no dskit
// interceptors. Data straddles an ingester head and bucket blocks.
func TestThanosStoreEndpoint(t *testing.T) {
	fixture := genFixture(4)
	end := t0 + 4*hourMs
	db := openHeadDB(t)
	appendSeries(t, db, fixture, t0+2*hourMs, end+1)
	bkt := newBucket(t)
	writeBlocks(t, bkt, fixture, t0, t0+3*hourMs, 2*hourMs)
	sg, sgAddr := startStoreGateway(t, bkt, 1<<20)
	if err := sg.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.ThanosStoreListenAddress = "127.0.0.1:0"
	q, _ := startQuerier(t, cfg, []string{fakeIngester(t, db)}, []string{sgAddr})

	// Like Thanos, decode with gogo-generated code (client.Codec copies the receive buffer,
	// which the messages alias).
	conn, err := grpc.NewClient(q.ThanosStoreAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(client.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	store := storepb.NewStoreClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), storeapi.ThanosTenantHeader, testTenant), time.Minute)
	defer cancel()

	info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.LabelSets) != 1 || client.PromLabelsFromZLabels(info.LabelSets[0].Labels).String() != `{tenant_id="team-1"}` || info.Store == nil {
		t.Fatalf("info = %+v", info)
	}

	series := func(ms ...*labels.Matcher) map[string]int {
		pbms, err := storepb.PromMatchersToMatchers(ms...)
		if err != nil {
			t.Fatal(err)
		}
		stream, err := store.Series(ctx, &storepb.SeriesRequest{MinTime: t0, MaxTime: end, Matchers: pbms})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			s := resp.GetSeries()
			if s == nil {
				continue
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
				for it.Next() != chunkenc.ValNone {
					out[key]++
				}
			}
		}
	}
	got := series(labels.MustNewMatcher(labels.MatchEqual, "__name__", "cpu_usage"), labels.MustNewMatcher(labels.MatchEqual, TenantLabel, testTenant))
	if len(got) != 6 {
		t.Fatalf("got %d cpu_usage series, want 6: %v", len(got), got)
	}
	// Every sample exactly once although hour 2-3 is both in the head and in a block.
	want := int(4*hourMs/scrapeMs) + 1
	for k, n := range got {
		if !strings.Contains(k, `tenant_id="team-1"`) || n != want {
			t.Errorf("%s: %d samples, want %d with tenant_id", k, n, want)
		}
	}
	if got := series(labels.MustNewMatcher(labels.MatchEqual, "__name__", "cpu_usage"), labels.MustNewMatcher(labels.MatchEqual, TenantLabel, "other")); len(got) != 0 {
		t.Errorf("tenant_id=other matched %d series", len(got))
	}

	names, err := store.LabelNames(ctx, &storepb.LabelNamesRequest{Start: t0, End: end})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names.Names, TenantLabel) || !slices.Contains(names.Names, "job") {
		t.Errorf("label names = %v", names.Names)
	}
	vals, err := store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: TenantLabel, Start: t0, End: end})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(vals.Values, ",") != testTenant {
		t.Errorf("tenant_id values = %v", vals.Values)
	}
	vals, err = store.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job", Start: t0, End: end, Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "queue_size_fh"}}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(vals.Values, ",") != "api" {
		t.Errorf("job values of queue_size_fh = %v", vals.Values)
	}

	// Without tenant metadata and without a default tenant, requests are refused.
	if _, err := store.LabelNames(context.Background(), &storepb.LabelNamesRequest{Start: t0, End: end}); err == nil {
		t.Error("request without tenant succeeded")
	}
}
