package tracestore

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
)

// BenchmarkIngestGRPC measures spans/s acknowledged (fsynced to the WAL)
// through the OTLP gRPC push, with concurrent clients as distributors send.
func BenchmarkIngestGRPC(b *testing.B) {
	ing := startIngester(b, testIngesterConfig(b.TempDir()), newTestBucket(b), nil)
	cc := serveGRPC(b, ing)
	const batches = 64
	reqs := make([]ptrace.Traces, batches)
	for i := range reqs {
		reqs[i] = genTraces(genOpts{traces: 10, spansPerTrace: 10, attrsPerSpan: 10, seed: int64(i)})
	}
	spansPerBatch := reqs[0].SpanCount()
	ctx := tenantCtx("bench")
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8) // 8 goroutines per core: distributors push concurrently
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := push(ctx, cc, reqs[int(i)%batches]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(n.Load())*float64(spansPerBatch)/time.Since(start).Seconds(), "spans/s")
}

// BenchmarkBlockBytesPerSpan builds a block from realistic spans (10
// attributes, three services, events on some roots) and reports the stored
// size per span: the data file alone and all block files together.
func BenchmarkBlockBytesPerSpan(b *testing.B) {
	td := genTraces(genOpts{traces: 20000, spansPerTrace: 8, attrsPerSpan: 10,
		services: []string{"frontend", "cart", "checkout", "payment", "shipping"}, seed: 1})
	rows := tracesToRows(td)
	sortRows(rows)
	b.ReportAllocs()
	b.ResetTimer()
	var blk *builtBlock
	for i := 0; i < b.N; i++ {
		var err error
		blk, err = buildBlock(ulid.Make(), "bench", rows, 4096, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	total := 0
	for _, f := range blk.files {
		total += len(f)
	}
	data := float64(len(blk.files[blockDataFile])) / float64(len(rows))
	all := float64(total) / float64(len(rows))
	b.ReportMetric(data, "data-B/span")
	b.ReportMetric(all, "block-B/span")
	b.ReportMetric(float64(len(rows))*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
	fmt.Printf("block bytes per span: data.parquet %.1f, all files %.1f (%d spans)\n", data, all, len(rows))
}

// BenchmarkTraceByIDFromBucket looks up random traces in blocks through the
// Querier (bloom, cached index and footer, one row-group range read) and
// reports p50/p99. VIGIL_TRACE_BENCH_BLOCKS and VIGIL_TRACE_BENCH_BLOCK_SPANS
// scale the stored data (default 4 × 200k spans; the figure uses
// 10 × 1M).
func BenchmarkTraceByIDFromBucket(b *testing.B) {
	blocks := envInt("VIGIL_TRACE_BENCH_BLOCKS", 4)
	spansPerBlock := envInt("VIGIL_TRACE_BENCH_BLOCK_SPANS", 200_000)
	const spansPerTrace = 8
	tracesPerBlock := spansPerBlock / spansPerTrace
	bkt := newTestBucket(b)
	tbkt := bucket.ForTenant(bkt, "bench")
	for blk := 0; blk < blocks; blk++ {
		rows := tracesToRows(genTraces(genOpts{traces: tracesPerBlock, spansPerTrace: spansPerTrace, attrsPerSpan: 10,
			services: []string{"frontend", "cart", "checkout", "payment", "shipping"}, seed: int64(blk)}))
		sortRows(rows)
		built, err := buildBlock(ulid.Make(), "bench", rows, 4096, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := uploadBlock(context.Background(), tbkt, built); err != nil {
			b.Fatal(err)
		}
	}
	ctx := tenantCtx("bench")
	b.Run(fmt.Sprintf("spans=%d", blocks*spansPerBlock), func(b *testing.B) {
		q := testQuerier(b, bkt, nil)
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := testTraceID(int64(i%blocks), (i*7919)%tracesPerBlock)
			t0 := time.Now()
			_, found, err := q.TraceByID(ctx, id, time.Time{}, time.Time{})
			lat = append(lat, time.Since(t0))
			if err != nil || !found {
				b.Fatalf("trace %s: found=%v err=%v", id, found, err)
			}
		}
		reportPercentiles(b, lat)
	})
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkSearchBucket searches one hour of blocks by service + attribute.
func BenchmarkSearchBucket(b *testing.B) {
	bkt := newTestBucket(b)
	ing := startIngester(b, IngesterConfig{DataDir: b.TempDir(), MaxBlockDuration: time.Hour, MaxBlockBytes: 1 << 40,
		CutCheckInterval: time.Hour, RowGroupSpans: 4096}, bkt, nil)
	ctx := tenantCtx("bench")
	hourAgo := time.Now().Add(-time.Hour)
	const blocks = 4 // one per 15 minutes
	for blk := 0; blk < blocks; blk++ {
		td := genTraces(genOpts{traces: 10000, spansPerTrace: 8, attrsPerSpan: 10, seed: int64(blk),
			base: hourAgo.Add(time.Duration(blk) * 15 * time.Minute)})
		if _, err := ing.Export(ctx, exportReq(td)); err != nil {
			b.Fatal(err)
		}
		if err := ing.FlushAll(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	end := time.Now()
	cases := []struct {
		name string
		req  SearchRequest
	}{
		{"service+attribute", SearchRequest{Service: "cart", Attributes: map[string]string{"http.status_code": "500"}}},
		{"service+operation", SearchRequest{Service: "cart", Operation: "POST /api/v1/op1"}},
		{"attribute-only", SearchRequest{Attributes: map[string]string{"region": "us-east-1"}}},
		{"min-duration-only", SearchRequest{MinDuration: 5 * time.Millisecond}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// A fresh querier per case: the first iteration is a cold read.
			q := testQuerier(b, bkt, nil)
			req := c.req
			req.Start, req.End, req.Limit = hourAgo, end, 20
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				res, err := q.Search(ctx, req)
				lat = append(lat, time.Since(t0))
				if err != nil || len(res) != 20 {
					b.Fatalf("search: %d results, %v", len(res), err)
				}
			}
			reportPercentiles(b, lat)
		})
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkHeadSearch searches an ingester head holding 160k spans.
func BenchmarkHeadSearch(b *testing.B) {
	ing := startIngester(b, testIngesterConfig(b.TempDir()), newTestBucket(b), nil)
	ctx := tenantCtx("bench")
	for i := 0; i < 4; i++ {
		if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 5000, spansPerTrace: 8, attrsPerSpan: 10, seed: int64(i)}))); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		req  SearchRequest
	}{
		{"recent", SearchRequest{Limit: 20}},
		{"service+attribute", SearchRequest{Service: "cart", Attributes: map[string]string{"http.status_code": "500"}, Limit: 20}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				res, err := ing.Search(ctx, c.req)
				if err != nil || len(res) != 20 {
					b.Fatalf("search: %d %v", len(res), err)
				}
			}
		})
	}
}
