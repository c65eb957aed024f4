package storeapi

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
)

// captureServer records what a real gRPC stream would put on the wire: messages are
// marshalled at Send, because the server reuses them afterwards.
type captureServer struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []*storepb.SeriesResponse
}

func (c *captureServer) Context() context.Context { return c.ctx }

func (c *captureServer) Send(r *storepb.SeriesResponse) error {
	b, err := r.Marshal()
	if err != nil {
		return err
	}
	var out storepb.SeriesResponse
	if err := out.Unmarshal(b); err != nil {
		return err
	}
	c.msgs = append(c.msgs, &out)
	return nil
}

func TestSeries_BatchedAndSingleResponsesCarryTheSameSeries(t *testing.T) {
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	app := db.Appender(context.Background())
	const nSeries = 37
	for i := range nSeries {
		lset := labels.FromStrings("__name__", "m", "i", fmt.Sprintf("%03d", i))
		for ts := int64(0); ts < 300; ts++ { // several chunks per series
			if _, err := app.Append(0, lset, ts*1000, float64(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(func(context.Context, string) (storage.ChunkQueryable, error) { return db, nil }, ServerOptions{})

	run := func(batch int64) (series []*storepb.Series, msgs int) {
		t.Helper()
		cs := &captureServer{ctx: user.InjectOrgID(context.Background(), "t")}
		req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 300_000, ResponseBatchSize: batch,
			Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "m"}}}
		if err := srv.Series(req, cs); err != nil {
			t.Fatal(err)
		}
		for _, m := range cs.msgs {
			if s := m.GetSeries(); s != nil {
				series = append(series, s)
			}
			if b := m.GetBatch(); b != nil {
				series = append(series, b.Series...)
			}
		}
		return series, len(cs.msgs)
	}
	single, singleMsgs := run(0)
	batched, batchedMsgs := run(10)
	if len(single) != nSeries || singleMsgs != nSeries {
		t.Fatalf("single: %d series in %d messages, want %d", len(single), singleMsgs, nSeries)
	}
	if batchedMsgs != 4 {
		t.Errorf("batched: %d messages, want 4", batchedMsgs)
	}
	if len(batched) != nSeries {
		t.Fatalf("batched: %d series, want %d", len(batched), nSeries)
	}
	for i := range single {
		a, b := single[i], batched[i]
		if !labels.Equal(labels.FromStrings("__name__", "m", "i", fmt.Sprintf("%03d", i)), labelsOf(a)) || !labels.Equal(labelsOf(a), labelsOf(b)) {
			t.Fatalf("series %d: labels %v vs %v", i, labelsOf(a), labelsOf(b))
		}
		if len(a.Chunks) < 2 || len(a.Chunks) != len(b.Chunks) {
			t.Fatalf("series %d: %d vs %d chunks", i, len(a.Chunks), len(b.Chunks))
		}
		for j := range a.Chunks {
			ca, cb := a.Chunks[j], b.Chunks[j]
			if ca.MinTime != cb.MinTime || ca.MaxTime != cb.MaxTime || ca.Raw.Type != cb.Raw.Type || !bytes.Equal(ca.Raw.Data, cb.Raw.Data) {
				t.Fatalf("series %d chunk %d differs", i, j)
			}
		}
	}
}

func labelsOf(s *storepb.Series) labels.Labels {
	b := labels.NewScratchBuilder(len(s.Labels))
	for _, l := range s.Labels {
		b.Add(l.Name, l.Value)
	}
	return b.Labels()
}
