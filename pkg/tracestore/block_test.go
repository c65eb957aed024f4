package tracestore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func testQuerier(t testing.TB, bkt objstore.Bucket, heads HeadSource) *Querier {
	t.Helper()
	q, err := NewQuerier(QuerierConfig{BlockSyncInterval: 0, CacheBytes: 64 << 20}, bkt, heads, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// countingBucket counts range reads per object to prove trace-by-ID fetches
// a single row group.
type countingBucket struct {
	objstore.Bucket
	mu     sync.Mutex
	ranges map[string]int
	gets   map[string]int
}

func newCountingBucket(b objstore.Bucket) *countingBucket {
	return &countingBucket{Bucket: b, ranges: map[string]int{}, gets: map[string]int{}}
}

func (c *countingBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.ranges[filepath.Base(name)]++
	c.mu.Unlock()
	return c.Bucket.GetRange(ctx, name, off, length)
}

func (c *countingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.mu.Lock()
	c.gets[filepath.Base(name)]++
	c.mu.Unlock()
	return c.Bucket.Get(ctx, name)
}

func (c *countingBucket) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ranges, c.gets = map[string]int{}, map[string]int{}
}

func TestFlushDeleteHeadQueryFromBucket(t *testing.T) {
	dataDir := t.TempDir()
	base := newTestBucket(t)
	ing := startIngester(t, testIngesterConfig(dataDir), base, nil)
	base0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	td := genTraces(genOpts{traces: 300, spansPerTrace: 5, attrsPerSpan: 10, seed: 42, base: base0})
	if err := push(tenantCtx("t1"), serveGRPC(t, ing), td); err != nil {
		t.Fatal(err)
	}
	// Another tenant's data must never show up for t1.
	if err := push(tenantCtx("t2"), serveGRPC(t, ing), genTraces(genOpts{traces: 3, services: []string{"secret-svc"}, seed: 43})); err != nil {
		t.Fatal(err)
	}
	if err := ing.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The WAL is truncated after upload.
	segs, err := listSegments(filepath.Join(dataDir, "traces", "t1", "wal"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		fi, err := os.Stat(segmentName(filepath.Join(dataDir, "traces", "t1", "wal"), s))
		if err != nil || fi.Size() != 0 {
			t.Fatalf("WAL segment %d left after flush (size %d, %v)", s, fi.Size(), err)
		}
	}

	// Query with no heads at all: everything comes from the bucket.
	bkt := newCountingBucket(base)
	q := testQuerier(t, bkt, nil)
	ctx := tenantCtx("t1")

	id := testTraceID(42, 123)
	bkt.reset()
	got, found, err := q.TraceByID(ctx, id, time.Time{}, time.Time{})
	if err != nil || !found {
		t.Fatalf("TraceByID from bucket: found=%v err=%v", found, err)
	}
	want := spanIDs(t, filterTrace(td, id))
	gotIDs := spanIDs(t, got)
	if len(gotIDs) != len(want) {
		t.Fatalf("got %d spans, want %d", len(gotIDs), len(want))
	}
	for sid := range want {
		if !gotIDs[sid] {
			t.Fatalf("span %x missing", sid)
		}
	}
	if n := bkt.ranges[blockDataFile]; n != 2 { // footer + one row group
		t.Fatalf("trace by ID made %d range reads of the data file, want 2 (footer, one row group)", n)
	}
	if bkt.gets[blockDataFile] != 0 {
		t.Fatal("trace by ID downloaded the whole data file")
	}
	// Second lookup: footer cached, one range read.
	bkt.reset()
	if _, found, err := q.TraceByID(ctx, testTraceID(42, 7), time.Time{}, time.Time{}); err != nil || !found {
		t.Fatalf("second lookup: %v %v", found, err)
	}
	if n := bkt.ranges[blockDataFile]; n != 1 {
		t.Fatalf("cached lookup made %d range reads, want 1", n)
	}
	// The same trace again: footer and row group both cached.
	bkt.reset()
	if _, found, err := q.TraceByID(ctx, testTraceID(42, 7), time.Time{}, time.Time{}); err != nil || !found {
		t.Fatalf("third lookup: %v %v", found, err)
	}
	if n := bkt.ranges[blockDataFile]; n != 0 {
		t.Fatalf("repeated lookup made %d range reads, want 0", n)
	}
	// Concurrent lookups share the opened data file and cached row groups.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 300; i += 8 {
				got, found, err := q.TraceByID(ctx, testTraceID(42, i), time.Time{}, time.Time{})
				if err != nil || !found || got.SpanCount() != 5 {
					errs <- fmt.Errorf("trace %d: found=%v spans=%d err=%v", i, found, got.SpanCount(), err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A trace that does not exist: the bloom filter answers, no data reads.
	bkt.reset()
	if _, found, err := q.TraceByID(ctx, testTraceID(999, 1), time.Time{}, time.Time{}); err != nil || found {
		t.Fatalf("missing trace: found=%v err=%v", found, err)
	}

	// Search without a service name: by attribute alone, and by duration alone.
	res, err := q.Search(ctx, SearchRequest{Attributes: map[string]string{"region": "eu-west-1"}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 150 {
		t.Fatalf("attribute search returned %d traces, want 150", len(res))
	}
	for i := 1; i < len(res); i++ {
		if res[i].Start.After(res[i-1].Start) {
			t.Fatal("search results not newest first")
		}
	}
	res2, err := q.Search(ctx, SearchRequest{Attributes: map[string]string{"region": "eu-west-1"}, Limit: 1000})
	if err != nil || len(res2) != len(res) {
		t.Fatal("repeated search differs")
	}
	for i := range res {
		if res[i].TraceID != res2[i].TraceID {
			t.Fatal("search order is not deterministic")
		}
	}
	res, err = q.Search(ctx, SearchRequest{Limit: 5})
	if err != nil || len(res) != 5 || res[0].TraceID != testTraceID(42, 299) {
		t.Fatalf("time-only search: %v %v", res, err)
	}
	if res[0].RootService != "frontend" || res[0].SpanCount != 5 || res[0].Duration != 15*time.Millisecond {
		t.Fatalf("summary = %+v", res[0])
	}
	res, err = q.Search(ctx, SearchRequest{Service: "cart", Operation: "POST /api/v1/op1", SpanKind: "client", MinDuration: time.Millisecond, Limit: 1000})
	if err != nil || len(res) != 300 {
		t.Fatalf("service+operation+kind search: %d %v", len(res), err)
	}
	res, err = q.Search(ctx, SearchRequest{Service: "cart", SpanKind: "server", Operation: "POST /api/v1/op1"})
	if err != nil || len(res) != 0 {
		t.Fatalf("wrong kind matched: %d %v", len(res), err)
	}
	res, err = q.Search(ctx, SearchRequest{Start: base0.Add(100 * time.Millisecond), End: base0.Add(109 * time.Millisecond), Limit: 1000})
	if err != nil || len(res) != 25 { // traces 85..109 overlap (each lasts 15ms)
		t.Fatalf("time range search: %d %v", len(res), err)
	}

	res, err = q.Search(ctx, SearchRequest{Service: "checkout", Limit: 1000})
	if err != nil || len(res) != 300 {
		t.Fatalf("service-only search: %d %v", len(res), err)
	}
	res, err = q.Search(ctx, SearchRequest{Service: "secret-svc", Limit: 1000})
	if err != nil || len(res) != 0 {
		t.Fatalf("another tenant's service matched: %d %v", len(res), err)
	}
	res, err = q.Search(ctx, SearchRequest{Service: "cart", Attributes: map[string]string{"http.method": "GET", "k8s.namespace.name": "prod"}, Limit: 1000})
	if err != nil || len(res) != 300 {
		t.Fatalf("span+resource attribute search: %d %v", len(res), err)
	}
	// error=true (Jaeger) matches status Error, which is not an attribute,
	// also in blocks whose index has no "error" key.
	wantErr := map[TraceID]bool{}
	rss := td.ResourceSpans()
	for a := 0; a < rss.Len(); a++ {
		sp := rss.At(a).ScopeSpans().At(0).Spans()
		for b := 0; b < sp.Len(); b++ {
			if sp.At(b).Status().Code() == ptrace.StatusCodeError {
				wantErr[TraceID(sp.At(b).TraceID())] = true
			}
		}
	}
	res, err = q.Search(ctx, SearchRequest{Attributes: map[string]string{"error": "true"}, Limit: 1000})
	if err != nil || len(res) != len(wantErr) || len(wantErr) == 0 {
		t.Fatalf("error=true search: %d results, want %d (%v)", len(res), len(wantErr), err)
	}
	for _, r := range res {
		if !wantErr[r.TraceID] || r.ErrorCount == 0 {
			t.Fatalf("trace %s matched error=true without an error span", r.TraceID)
		}
	}
	res, err = q.Search(ctx, SearchRequest{Service: "cart", Attributes: map[string]string{"span.kind": "client", "error": "upstream timeout"}, Limit: 1000})
	if err != nil || len(res) == 0 {
		t.Fatalf("Zipkin-style error message + span.kind search: %d %v", len(res), err)
	}
	res, err = q.Search(ctx, SearchRequest{Attributes: map[string]string{"http.method": "PATCH"}, Limit: 1000})
	if err != nil || len(res) != 0 {
		t.Fatalf("unknown attribute value matched: %d %v", len(res), err)
	}

	svcs, err := q.Services(ctx, time.Time{}, time.Time{})
	if err != nil || strings.Join(svcs, ",") != "cart,checkout,frontend" {
		t.Fatalf("services = %v %v", svcs, err)
	}
	ops, err := q.Operations(ctx, "checkout", "", time.Time{}, time.Time{})
	if err != nil || len(ops) == 0 {
		t.Fatalf("operations = %v %v", ops, err)
	}
	deps, err := q.Dependencies(ctx, time.Time{}, time.Time{})
	if err != nil || len(deps) == 0 {
		t.Fatalf("deps = %v %v", deps, err)
	}
	keys, err := q.AttributeKeys(ctx, time.Time{}, time.Time{})
	if err != nil || !contains(keys, "http.route") || !contains(keys, "service.name") {
		t.Fatalf("keys = %v %v", keys, err)
	}
	vals, err := q.AttributeValues(ctx, "region", time.Time{}, time.Time{})
	if err != nil || strings.Join(vals, ",") != "eu-west-1,us-east-1" {
		t.Fatalf("values = %v %v", vals, err)
	}

	// A tenant that never wrote anything gets empty answers, not errors.
	if svcs, err := q.Services(tenantCtx("nobody"), time.Time{}, time.Time{}); err != nil || len(svcs) != 0 {
		t.Fatalf("empty tenant services = %v %v", svcs, err)
	}
	if res, err := q.Search(tenantCtx("nobody"), SearchRequest{}); err != nil || len(res) != 0 {
		t.Fatalf("empty tenant search = %v %v", res, err)
	}

	// Tenant isolation in the bucket.
	if svcs, _ := q.Services(tenantCtx("t2"), time.Time{}, time.Time{}); strings.Join(svcs, ",") != "secret-svc" {
		t.Fatalf("t2 services = %v", svcs)
	}
	if _, found, _ := q.TraceByID(tenantCtx("t2"), id, time.Time{}, time.Time{}); found {
		t.Fatal("t2 can read t1's trace")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestQuerierMergesHeadsAndBlocksWithDedup(t *testing.T) {
	bkt := newTestBucket(t)
	// Two ingesters receive the same spans (replication factor 2); one of
	// them flushes to the bucket, the other keeps them in its head.
	ing1 := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	ing2 := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	td := genTraces(genOpts{traces: 10, spansPerTrace: 4, seed: 5})
	ctx := tenantCtx("t1")
	for _, ing := range []*TraceIngester{ing1, ing2} {
		if err := push(ctx, serveGRPC(t, ing), td); err != nil {
			t.Fatal(err)
		}
	}
	if err := ing1.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	heads := StaticHeads(NewQueryClient(serveGRPC(t, ing1)), NewQueryClient(serveGRPC(t, ing2)))
	q := testQuerier(t, bkt, heads)
	got, found, err := q.TraceByID(ctx, testTraceID(5, 3), time.Time{}, time.Time{})
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if got.SpanCount() != 4 {
		t.Fatalf("got %d spans from 2 replicas + block, want 4 after dedup", got.SpanCount())
	}
	spanIDs(t, got) // fails on duplicates
	res, err := q.Search(ctx, SearchRequest{Limit: 100})
	if err != nil || len(res) != 10 {
		t.Fatalf("search: %d %v", len(res), err)
	}
	for _, s := range res {
		if s.SpanCount != 4 {
			t.Fatalf("summary %s span count %d, want 4", s.TraceID, s.SpanCount)
		}
	}
}

func TestBlockCutCarriesActiveTraces(t *testing.T) {
	bkt := newTestBucket(t)
	cfg := testIngesterConfig(t.TempDir())
	cfg.TraceIdlePeriod = time.Hour // every trace counts as active
	ing := startIngester(t, cfg, bkt, nil)
	ctx := tenantCtx("t1")
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 2, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	h, _ := ing.headFor("t1")
	// A non-forced cut keeps active traces in the head (re-logged to the new segment).
	if err := ing.cut(h, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := ing.uploadPending(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if h.cur.spans != 8 {
		t.Fatalf("head has %d spans after cut, want 8 carried", h.cur.spans)
	}
	// Restart: the carried spans must come back from the new WAL segment.
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	ing2 := startIngester(t, cfg, bkt, nil)
	got, found, err := ing2.TraceByID(ctx, testTraceID(1, 0), time.Time{}, time.Time{})
	if err != nil || !found || got.SpanCount() != 4 {
		t.Fatalf("carried trace after restart: found=%v spans=%d err=%v", found, got.SpanCount(), err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), ing2); err != nil {
		t.Fatal(err)
	}

	// A crash after re-logging but before the old segments are deleted
	// leaves the carried spans in the WAL twice; replay keeps them once.
	ing3, err := NewTraceIngester(cfg, bkt, nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h3, err := ing3.headFor("t1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ing3.cut(h3, false, time.Now()); err != nil { // re-log, no upload
		t.Fatal(err)
	}
	if err := ing3.stopping(nil); err != nil {
		t.Fatal(err)
	}
	ing4 := startIngester(t, cfg, bkt, nil)
	res, err := ing4.Search(ctx, SearchRequest{Limit: 10})
	if err != nil || len(res) != 2 {
		t.Fatalf("search after replaying duplicates: %v %v", res, err)
	}
	for _, s := range res {
		if s.SpanCount != 4 {
			t.Fatalf("trace %s counts %d spans after replay, want 4", s.TraceID, s.SpanCount)
		}
	}
}

func TestBloomFilter(t *testing.T) {
	const n = 10000
	b := newBloom(n, 0.01)
	for i := 0; i < n; i++ {
		b.add(testTraceID(1, i))
	}
	b2, err := unmarshalBloom(b.marshal())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if !b2.mayContain(testTraceID(1, i)) {
			t.Fatalf("false negative for %d", i)
		}
	}
	fp := 0
	for i := 0; i < n; i++ {
		if b2.mayContain(testTraceID(2, i)) {
			fp++
		}
	}
	if fp > n*3/100 {
		t.Fatalf("false positive rate %d/%d, want about 1%%", fp, n)
	}
	if _, err := unmarshalBloom([]byte("VTBF\x01")); err == nil {
		t.Fatal("truncated bloom accepted")
	}
}

func TestBuildBlockRowGroupsNeverSplitTraces(t *testing.T) {
	rows := tracesToRows(genTraces(genOpts{traces: 50, spansPerTrace: 7, seed: 9}))
	sortRows(rows)
	b, err := buildBlock(ulid.Make(), "t1", rows, 10, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ix blockIndex
	if err := jsonUnmarshal(b.files[blockIndexFile], &ix); err != nil {
		t.Fatal(err)
	}
	if len(ix.RowGroups) < 10 {
		t.Fatalf("only %d row groups", len(ix.RowGroups))
	}
	for i := 1; i < len(ix.RowGroups); i++ {
		if ix.RowGroups[i].MinTraceID <= ix.RowGroups[i-1].MaxTraceID {
			t.Fatalf("row groups %d and %d overlap in trace IDs", i-1, i)
		}
	}
	if b.meta.Traces != 50 || b.meta.Spans != 350 {
		t.Fatalf("meta = %+v", b.meta)
	}
}

type fakeRing struct{ addrs []string }

func (f fakeRing) GetAllHealthy(ring.Operation) (ring.ReplicationSet, error) {
	rs := ring.ReplicationSet{}
	for _, a := range f.addrs {
		rs.Instances = append(rs.Instances, ring.InstanceDesc{Addr: a})
	}
	return rs, nil
}

func TestRingAddrs(t *testing.T) {
	addrs, err := RingAddrs(fakeRing{addrs: []string{"127.0.0.1:9095", "127.0.0.2:9095"}})(context.Background())
	if err != nil || strings.Join(addrs, ",") != "127.0.0.1:9095,127.0.0.2:9095" {
		t.Fatalf("addrs = %v, %v", addrs, err)
	}
}

func TestBlockCutCarriesAtMostAQuarterBlock(t *testing.T) {
	cfg := testIngesterConfig(t.TempDir())
	cfg.TraceIdlePeriod = time.Hour // every trace counts as active
	cfg.MaxBlockBytes = 16 << 10
	// Not started: the service's cut loop would race with the manual cut.
	ing, err := NewTraceIngester(cfg, newTestBucket(t), nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ing.stopping(nil) }()
	if _, err := ing.Export(tenantCtx("t1"), exportReq(genTraces(genOpts{traces: 40, attrsPerSpan: 10, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	h, _ := ing.headFor("t1")
	if err := ing.cut(h, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if h.cur.bytes > cfg.MaxBlockBytes/4 || h.cur.bytes == 0 {
		t.Fatalf("carried %d bytes, want (0, %d]", h.cur.bytes, cfg.MaxBlockBytes/4)
	}
	if len(h.flushing) != 1 || h.flushing[0].spans == 0 {
		t.Fatal("nothing left to flush after a size-triggered cut")
	}
}

func TestQuerierRefreshesKnownTenantsBlockLists(t *testing.T) {
	bkt := newTestBucket(t)
	q, err := NewQuerier(QuerierConfig{BlockSyncInterval: time.Hour, CacheBytes: 1 << 20}, bkt, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tenantCtx("t1")
	if svcs, err := q.Services(ctx, time.Time{}, time.Time{}); err != nil || len(svcs) != 0 {
		t.Fatalf("services = %v %v", svcs, err)
	}
	ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 1, services: []string{"late"}, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	if err := ing.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The cached list (1h interval) does not see the new block yet...
	if svcs, _ := q.Services(ctx, time.Time{}, time.Time{}); len(svcs) != 0 {
		t.Fatalf("services before refresh = %v", svcs)
	}
	// ...the background refresh of known tenants does.
	if err := q.refreshBlockLists(context.Background()); err != nil {
		t.Fatal(err)
	}
	if svcs, _ := q.Services(ctx, time.Time{}, time.Time{}); strings.Join(svcs, ",") != "late" {
		t.Fatalf("services after refresh = %v", svcs)
	}
}

func TestPostingsRoundTripAndCorruption(t *testing.T) {
	p := postings{}
	p.add(opKey{"a", "op", 2}, 0)
	p.add(opKey{"a", "op", 2}, 0)
	p.add(opKey{"a", "op", 2}, 5)
	p.add(opKey{"b", "x", 3}, 1)
	b := p.marshal()
	back, err := unmarshalPostings(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := back[opKey{"a", "op", 2}]; len(got) != 2 || got[1] != 5 {
		t.Fatalf("postings = %v", back)
	}
	m := newSpanMatcher(SearchRequest{SpanKind: "client"})
	if got := back.matching(&m); len(got) != 1 || got[0] != 1 {
		t.Fatalf("matching(kind=client) = %v", got)
	}
	for cut := 0; cut < len(b); cut++ {
		if _, err := unmarshalPostings(b[:cut]); err == nil {
			t.Fatalf("truncation at %d accepted", cut)
		}
	}
}
