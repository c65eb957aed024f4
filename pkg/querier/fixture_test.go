package querier

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
	"github.com/vigil-obs/vigil/pkg/storegateway"
	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
)

const (
	testTenant = "team-1"
	scrapeMs   = int64(15_000)
	hourMs     = int64(time.Hour / time.Millisecond)
)

// t0 is the start of the fixture data, hour-aligned.
var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

// sample implements chunks.Sample for building test series.
type sample struct {
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return s.h }
func (s sample) FH() *histogram.FloatHistogram { return s.fh }
func (s sample) Copy() chunks.Sample           { return s }
func (s sample) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

type testSeries struct {
	lset    labels.Labels
	samples []sample
}

// between returns the samples with mint <= t < maxt.
func (s testSeries) between(mint, maxt int64) []chunks.Sample {
	var out []chunks.Sample
	for _, smp := range s.samples {
		if smp.t >= mint && smp.t < maxt {
			out = append(out, smp)
		}
	}
	return out
}

// genFixture builds a realistic, deterministic data set spanning hours from t0: counters
// with resets, gauges, classic and native histograms, sparse series with gaps.
func genFixture(hours int) []testSeries {
	rng := rand.New(rand.NewPCG(42, 7))
	n := int(int64(hours)*hourMs/scrapeMs) + 1
	ts := func(i int) int64 { return t0 + int64(i)*scrapeMs }
	var out []testSeries

	jobs := []string{"api", "web"}
	instances := []string{"i0", "i1", "i2"}
	for _, job := range jobs {
		for _, inst := range instances {
			for _, code := range []string{"200", "500"} {
				for _, method := range []string{"get", "post"} {
					s := testSeries{lset: labels.FromStrings("__name__", "http_requests_total", "job", job, "instance", inst, "code", code, "method", method)}
					v := 0.0
					for i := range n {
						if rng.IntN(700) == 0 {
							v = 0 // counter reset (process restart)
						}
						v += float64(rng.IntN(20))
						s.samples = append(s.samples, sample{t: ts(i), f: v})
					}
					out = append(out, s)
				}
			}
			cpu := testSeries{lset: labels.FromStrings("__name__", "cpu_usage", "job", job, "instance", inst)}
			mem := testSeries{lset: labels.FromStrings("__name__", "memory_bytes", "job", job, "instance", inst)}
			m := 1e9 * (1 + rng.Float64())
			for i := range n {
				cpu.samples = append(cpu.samples, sample{t: ts(i), f: 0.5 + 0.4*math.Sin(float64(i)/50+rng.Float64()*0.2)})
				m += rng.NormFloat64() * 1e6
				mem.samples = append(mem.samples, sample{t: ts(i), f: math.Round(m)})
			}
			out = append(out, cpu, mem)
		}
		out = append(out, testSeries{lset: labels.FromStrings("__name__", "build_info", "job", job, "version", "1.2."+job), samples: constant(n, ts, 1)})

		// Classic histogram: cumulative buckets, sum and count.
		bounds := []string{"0.1", "0.5", "1", "5", "+Inf"}
		buckets := make([]testSeries, len(bounds))
		for bi, le := range bounds {
			buckets[bi].lset = labels.FromStrings("__name__", "request_duration_seconds_bucket", "job", job, "le", le)
		}
		sum := testSeries{lset: labels.FromStrings("__name__", "request_duration_seconds_sum", "job", job)}
		count := testSeries{lset: labels.FromStrings("__name__", "request_duration_seconds_count", "job", job)}
		counts := make([]float64, len(bounds))
		total, s := 0.0, 0.0
		for i := range n {
			cum := 0.0
			for bi := range bounds {
				inc := float64(rng.IntN(10 - 2*min(bi, 4)))
				cum += inc
				// cum grows with the bucket index, so buckets stay cumulative in le.
				counts[bi] += cum
			}
			for bi := range bounds {
				buckets[bi].samples = append(buckets[bi].samples, sample{t: ts(i), f: counts[bi]})
			}
			total = counts[len(bounds)-1]
			s += total * 0.01 * rng.Float64()
			sum.samples = append(sum.samples, sample{t: ts(i), f: s})
			count.samples = append(count.samples, sample{t: ts(i), f: total})
		}
		out = append(out, buckets...)
		out = append(out, sum, count)

		// Native histogram counter.
		nh := testSeries{lset: labels.FromStrings("__name__", "request_duration_native", "job", job)}
		off := int64(len(job))
		for i := range n {
			nh.samples = append(nh.samples, sample{t: ts(i), h: tsdbutil.GenerateTestHistogram(int64(i)*3 + off)})
		}
		out = append(out, nh)

		// Sparse series: present only in some windows, to exercise absent/present/staleness.
		sp := testSeries{lset: labels.FromStrings("__name__", "sparse_metric", "job", job)}
		for i := range n {
			if (i/120)%3 == 0 {
				sp.samples = append(sp.samples, sample{t: ts(i), f: float64(i % 17)})
			}
		}
		out = append(out, sp)
	}
	// A gauge float histogram.
	fh := testSeries{lset: labels.FromStrings("__name__", "queue_size_fh", "job", "api")}
	for i := range n {
		fh.samples = append(fh.samples, sample{t: ts(i), fh: tsdbutil.GenerateTestGaugeFloatHistogram(int64(i % 50))})
	}
	out = append(out, fh)
	// Series are created in label order so the reference head iterates them in the same
	// order as blocks do (block series refs are label-sorted). Order-sensitive float
	// results (stddev sums, topk ties) then compare exactly.
	slices.SortFunc(out, func(a, b testSeries) int { return labels.Compare(a.lset, b.lset) })
	return out
}

func constant(n int, ts func(int) int64, v float64) []sample {
	out := make([]sample, n)
	for i := range out {
		out[i] = sample{t: ts(i), f: v}
	}
	return out
}

// openHeadDB opens a TSDB that keeps everything in its head (no compaction), like an
// ingester's recent data.
func openHeadDB(tb testing.TB) *tsdb.DB {
	tb.Helper()
	opts := tsdb.DefaultOptions()
	opts.MinBlockDuration = 100 * 24 * hourMs
	opts.MaxBlockDuration = opts.MinBlockDuration
	opts.EnableExemplarStorage = true
	opts.MaxExemplars = 1000
	db, err := tsdb.Open(tb.TempDir(), nil, nil, opts, nil)
	if err != nil {
		tb.Fatal(err)
	}
	db.DisableCompactions()
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// appendSeries writes the samples of every series with mint <= t < maxt.
func appendSeries(tb testing.TB, db *tsdb.DB, series []testSeries, mint, maxt int64) {
	tb.Helper()
	app := db.Appender(context.Background())
	n := 0
	for _, s := range series {
		var ref storage.SeriesRef
		var err error
		for _, smp := range s.samples {
			if smp.t < mint || smp.t >= maxt {
				continue
			}
			switch {
			case smp.h != nil:
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, smp.h, nil)
			case smp.fh != nil:
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, nil, smp.fh)
			default:
				ref, err = app.Append(ref, s.lset, smp.t, smp.f)
			}
			if err != nil {
				tb.Fatalf("append %s@%d: %v", s.lset, smp.t, err)
			}
			if n++; n%50_000 == 0 {
				if err := app.Commit(); err != nil {
					tb.Fatal(err)
				}
				app = db.Appender(context.Background())
			}
		}
	}
	if err := app.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// writeBlocks uploads one block per [from, to) window of width blockMs.
func writeBlocks(tb testing.TB, bkt objstore.Bucket, series []testSeries, mint, maxt, blockMs int64) {
	tb.Helper()
	for from := mint; from < maxt; from += blockMs {
		to := min(from+blockMs, maxt)
		var ss []storage.Series
		for _, s := range series {
			if smps := s.between(from, to); len(smps) > 0 {
				ss = append(ss, storage.NewListSeries(s.lset, smps))
			}
		}
		if len(ss) == 0 {
			continue
		}
		if _, err := storegatewaytest.WriteBlock(context.Background(), bkt, tb.TempDir(), testTenant, ss, storegatewaytest.BlockOptions{}); err != nil {
			tb.Fatal(err)
		}
	}
}

// fakeIngester serves a TSDB over the StoreAPI the way an ingester does.
// NOTE: stands in for pkg/ingester in these tests; integration tests cover the real one.
func fakeIngester(tb testing.TB, db *tsdb.DB) string {
	tb.Helper()
	srv := headStoreServer(db)
	return storegatewaytest.StartGRPC(tb, func(s *grpc.Server) { storepb.RegisterStoreServer(s, srv) })
}

// localIngester is fakeIngester registered as an ingester of this process, the way a
// -target=all process registers its ingester: queriers read its Series by direct call.
func localIngester(tb testing.TB, db *tsdb.DB) string {
	tb.Helper()
	srv := headStoreServer(db)
	addr := storegatewaytest.StartGRPC(tb, func(s *grpc.Server) { storepb.RegisterStoreServer(s, srv) })
	tb.Cleanup(client.RegisterLocal(addr, client.Local{Store: srv}))
	return addr
}

func headStoreServer(db *tsdb.DB) *storeapi.Server {
	return storeapi.NewServer(func(_ context.Context, tenant string) (storage.ChunkQueryable, error) {
		if tenant != testTenant {
			return nil, nil
		}
		return db, nil
	}, storeapi.ServerOptions{})
}

// startStoreGateway serves bkt and returns its gRPC address.
func startStoreGateway(tb testing.TB, bkt objstore.Bucket, cacheSize int64) (*storegateway.StoreGateway, string) {
	tb.Helper()
	sg, err := storegateway.New(storegateway.Config{DataDir: tb.TempDir(), SyncInterval: time.Hour, ChunkCacheSize: cacheSize}, bkt, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), sg); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), sg) })
	return sg, storegatewaytest.StartGRPC(tb, func(s *grpc.Server) { sg.RegisterGRPC(s) })
}

func newBucket(tb testing.TB) objstore.Bucket {
	tb.Helper()
	bkt, err := filesystem.NewBucket(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return bkt
}

func testConfig() Config {
	cfg := Config{
		Timeout:                   time.Minute,
		MaxSamples:                50_000_000,
		LookbackDelta:             5 * time.Minute,
		DefaultEvaluationInterval: time.Minute,
		Client:                    client.DefaultConfig(),
	}
	return cfg
}

// startQuerier starts a querier over the given backends and serves its HTTP API.
func startQuerier(tb testing.TB, cfg Config, ingesters, storeGateways []string) (*Querier, *httptest.Server) {
	tb.Helper()
	q, err := New(cfg, Deps{Ingesters: StaticAddresses(ingesters), StoreGateways: StaticAddresses(storeGateways)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), q); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), q) })
	return q, newTestRouter(tb, q)
}

// newTestRouter serves the querier's HTTP API the way the server mounts it.
func newTestRouter(tb testing.TB, q *Querier) *httptest.Server {
	tb.Helper()
	r := mux.NewRouter()
	q.RegisterHTTP(r)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return srv
}

// startReference serves Prometheus' API over a plain TSDB with an identically configured
// engine: the oracle Vigil must match.
func startReference(tb testing.TB, cfg Config, db *tsdb.DB) *httptest.Server {
	tb.Helper()
	engine := promql.NewEngine(EngineOpts(cfg, nil, nil))
	api := newPromAPI(engine, db, db, cfg.LookbackDelta, nil, "reference")
	srv := httptest.NewServer(newAPIRouter(api, http.NotFound))
	tb.Cleanup(srv.Close)
	return srv
}

// tenantTransport adds the tenant header, like Grafana configured with X-Scope-OrgID.
type tenantTransport struct{ tenant string }

func (t tenantTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Scope-OrgID", t.tenant)
	return http.DefaultTransport.RoundTrip(r)
}

func promClient(tb testing.TB, url, tenant string) promv1.API {
	tb.Helper()
	c, err := api.NewClient(api.Config{Address: url, RoundTripper: tenantTransport{tenant: tenant}})
	if err != nil {
		tb.Fatal(err)
	}
	return promv1.NewAPI(c)
}
