package tracestore

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
)

func testCompactor(t *testing.T, bkt objstore.Bucket, now *time.Time) *TraceCompactor {
	t.Helper()
	c, err := NewTraceCompactor(CompactorConfig{
		Interval: time.Hour, Retention: 24 * time.Hour, Window: time.Hour,
		MaxBlockSpans: 1_000_000, DeletionDelay: 10 * time.Minute, RowGroupSpans: 64,
	}, bkt, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return *now }
	return c
}

func liveBlocks(t *testing.T, bkt objstore.Bucket, tenant string) []*BlockMeta {
	t.Helper()
	s := newBlockStore(bkt, 0, 1<<20, nil)
	metas, err := s.blocks(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return metas
}

func TestCompactorMergesDedupsAndDeletes(t *testing.T) {
	bkt := newTestBucket(t)
	ctx := tenantCtx("t1")
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Hour)
	// Replicas: two ingesters flush the same 20 traces; a third block adds 10 more.
	shared := genTraces(genOpts{traces: 20, spansPerTrace: 5, seed: 11, base: base.Add(time.Minute)})
	for i := 0; i < 2; i++ {
		ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
		if _, err := ing.Export(ctx, exportReq(shared)); err != nil {
			t.Fatal(err)
		}
		if err := ing.FlushAll(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 10, spansPerTrace: 5, seed: 12, base: base.Add(2 * time.Minute)}))); err != nil {
		t.Fatal(err)
	}
	if err := ing.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(liveBlocks(t, bkt, "t1")); n != 3 {
		t.Fatalf("%d blocks before compaction, want 3", n)
	}

	now := time.Now()
	c := testCompactor(t, bkt, &now)
	if err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	metas := liveBlocks(t, bkt, "t1")
	if len(metas) != 1 {
		t.Fatalf("%d live blocks after compaction, want 1", len(metas))
	}
	if metas[0].Spans != 150 || metas[0].Traces != 30 || metas[0].Level != 2 || len(metas[0].Sources) != 3 {
		t.Fatalf("compacted meta = %+v, want 150 deduplicated spans in 30 traces from 3 sources", metas[0])
	}
	q := testQuerier(t, bkt, nil)
	got, found, err := q.TraceByID(ctx, testTraceID(11, 4), time.Time{}, time.Time{})
	if err != nil || !found || got.SpanCount() != 5 {
		t.Fatalf("after compaction: found=%v spans=%d err=%v", found, got.SpanCount(), err)
	}
	res, err := q.Search(ctx, SearchRequest{Limit: 100})
	if err != nil || len(res) != 30 {
		t.Fatalf("search after compaction: %d %v", len(res), err)
	}
	deps, err := q.Dependencies(ctx, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var calls uint64
	for _, d := range deps {
		calls += d.CallCount
	}
	if calls != 30*3 { // 3 cross-service parent/child pairs per trace, no replica double counting
		t.Fatalf("dependency calls = %d, want 90", calls)
	}

	// The inputs are only marked; after the deletion delay they are gone.
	countDirs := func() int {
		n := 0
		_ = bucket.ForTenant(bkt, "t1").Iter(context.Background(), "traces/", func(name string) error {
			if name != "traces/markers/" {
				n++
			}
			return nil
		})
		return n
	}
	if n := countDirs(); n != 4 {
		t.Fatalf("%d block dirs before the deletion delay, want 4", n)
	}
	now = now.Add(11 * time.Minute)
	if err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(); n != 1 {
		t.Fatalf("%d block dirs after the deletion delay, want 1", n)
	}

	// Retention: two days later the block is marked, then deleted.
	now = now.Add(48 * time.Hour)
	if err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(liveBlocks(t, bkt, "t1")); n != 0 {
		t.Fatalf("%d live blocks past retention, want 0", n)
	}
	now = now.Add(11 * time.Minute)
	if err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(); n != 0 {
		t.Fatalf("%d block dirs after retention, want 0", n)
	}
	if _, found, _ := testQuerier(t, bkt, nil).TraceByID(ctx, testTraceID(11, 4), time.Time{}, time.Time{}); found {
		t.Fatal("trace still readable after retention")
	}
}

func TestCompactorKeepsTenantsApart(t *testing.T) {
	bkt := newTestBucket(t)
	for _, tenant := range []string{"a", "b"} {
		for i := 0; i < 2; i++ {
			ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
			seed := int64(len(tenant)*10 + i)
			if tenant == "b" {
				seed += 100
			}
			if _, err := ing.Export(tenantCtx(tenant), exportReq(genTraces(genOpts{traces: 3, seed: seed}))); err != nil {
				t.Fatal(err)
			}
			if err := ing.FlushAll(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	now := time.Now()
	if err := testCompactor(t, bkt, &now).RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"a", "b"} {
		metas := liveBlocks(t, bkt, tenant)
		if len(metas) != 1 || metas[0].Traces != 6 || metas[0].Tenant != tenant {
			t.Fatalf("tenant %s: %d blocks, first %+v", tenant, len(metas), metas[0])
		}
	}
}

func TestCompactorServiceRunsPeriodically(t *testing.T) {
	bkt := newTestBucket(t)
	for i := 0; i < 2; i++ {
		ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
		if _, err := ing.Export(tenantCtx("t1"), exportReq(genTraces(genOpts{traces: 3, seed: int64(i)}))); err != nil {
			t.Fatal(err)
		}
		if err := ing.FlushAll(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewTraceCompactor(CompactorConfig{Interval: 10 * time.Millisecond, Retention: 0, Window: time.Hour,
		MaxBlockSpans: 1000, DeletionDelay: time.Hour, RowGroupSpans: 64}, bkt, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = services.StopAndAwaitTerminated(context.Background(), c) }()
	deadline := time.After(30 * time.Second)
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for {
		if metas := liveBlocks(t, bkt, "t1"); len(metas) == 1 && metas[0].Traces == 6 {
			return
		}
		select {
		case <-deadline:
			t.Fatal("the compactor service did not merge the blocks")
		case <-poll.C:
		}
	}
}

func TestCompactorConfigValidation(t *testing.T) {
	if _, err := NewTraceCompactor(CompactorConfig{}, newTestBucket(t), nil, nil); err == nil {
		t.Fatal("zero config accepted")
	}
}

// TestCompactorStreamingMergeKeepsSpansIntact merges blocks larger than one
// decode batch and checks every span's content survives the merge.
func TestCompactorStreamingMergeKeepsSpansIntact(t *testing.T) {
	bkt := newTestBucket(t)
	ctx := tenantCtx("t1")
	td := genTraces(genOpts{traces: 700, spansPerTrace: 5, attrsPerSpan: 10, seed: 21})
	for i := 0; i < 2; i++ { // two replicas of 3500 spans each
		ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
		if _, err := ing.Export(ctx, exportReq(td)); err != nil {
			t.Fatal(err)
		}
		if err := ing.FlushAll(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	if err := testCompactor(t, bkt, &now).RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	metas := liveBlocks(t, bkt, "t1")
	if len(metas) != 1 || metas[0].Spans != 3500 || metas[0].Traces != 700 {
		t.Fatalf("after merge: %d blocks, first %+v", len(metas), metas[0])
	}
	want := map[[8]byte]ptrace.Span{}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sp := rss.At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < sp.Len(); j++ {
			want[[8]byte(sp.At(j).SpanID())] = sp.At(j)
		}
	}
	q := testQuerier(t, bkt, nil)
	for tr := 0; tr < 700; tr += 37 {
		got, found, err := q.TraceByID(ctx, testTraceID(21, tr), time.Time{}, time.Time{})
		if err != nil || !found || got.SpanCount() != 5 {
			t.Fatalf("trace %d: found=%v spans=%d err=%v", tr, found, got.SpanCount(), err)
		}
		grss := got.ResourceSpans()
		for i := 0; i < grss.Len(); i++ {
			sp := grss.At(i).ScopeSpans().At(0).Spans()
			for j := 0; j < sp.Len(); j++ {
				g := sp.At(j)
				w, ok := want[[8]byte(g.SpanID())]
				if !ok || g.Name() != w.Name() || !reflect.DeepEqual(g.Attributes().AsRaw(), w.Attributes().AsRaw()) ||
					g.StartTimestamp() != w.StartTimestamp() || g.EndTimestamp() != w.EndTimestamp() || g.ParentSpanID() != w.ParentSpanID() {
					t.Fatalf("span %x differs after compaction", [8]byte(g.SpanID()))
				}
			}
		}
	}
}
