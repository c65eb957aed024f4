package ingester

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// benchSeries builds n series with label sets shaped like Kubernetes cAdvisor /
// kube-state-metrics / application metrics.
func benchSeries(n int) [][]prompb.Label {
	metrics := []string{
		"container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
		"http_server_request_duration_seconds_bucket", "http_requests_total",
		"kube_pod_container_status_restarts_total", "node_network_receive_bytes_total",
		"process_resident_memory_bytes", "go_goroutines",
	}
	out := make([][]prompb.Label, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, []prompb.Label{
			{Name: "__name__", Value: metrics[i%len(metrics)]},
			{Name: "cluster", Value: "prod-eu-west-1"},
			{Name: "container", Value: fmt.Sprintf("app-%d", i%37)},
			{Name: "instance", Value: fmt.Sprintf("10.%d.%d.%d:9100", i%7, (i/7)%250, (i/1750)%250)},
			{Name: "job", Value: "kubernetes-pods"},
			{Name: "namespace", Value: fmt.Sprintf("team-%d", i%23)},
			{Name: "pod", Value: fmt.Sprintf("app-%d-7d9f8c6b5-%05d", i%37, i/8)},
		})
	}
	return out
}

// BenchmarkIngesterPush measures one remote-write-sized batch (2000 samples) appended
// into a tenant head that holds 100k active series, WAL on, calling Push directly.
func BenchmarkIngesterPush(b *testing.B) {
	benchmarkPush(b, false)
}

// BenchmarkIngesterPushGRPC is the same through the gRPC client and server on loopback,
// as the distributor calls it.
func BenchmarkIngesterPushGRPC(b *testing.B) {
	benchmarkPush(b, true)
}

// BenchmarkIngesterPushUnchangedMetadata is BenchmarkIngesterPush with the metadata of
// every metric family in each batch, as remote write 2.0 sends it (the distributor
// turns RW2's per-series metadata into one entry per family). The metadata never
// changes after the first round, so the ingester must not touch the disk for it.
func BenchmarkIngesterPushUnchangedMetadata(b *testing.B) {
	benchmarkPushWith(b, false, true)
}

func benchmarkPush(b *testing.B, overGRPC bool) {
	benchmarkPushWith(b, overGRPC, false)
}

func benchmarkPushWith(b *testing.B, overGRPC, withMetadata bool) {
	const (
		numSeries = 100_000
		batchSize = 2000
	)
	ing := startIngester(b, testConfig(b), nil, nil)
	pushFn := ing.Push
	if overGRPC {
		c := serveGRPC(b, ing)
		pushFn = func(ctx context.Context, req *prompb.WriteRequest) (*client.PushResponse, error) {
			return c.Push(ctx, req)
		}
	}
	lsets := benchSeries(numSeries)
	base := time.Now().Add(-time.Hour).UnixMilli()

	batches := make([]*prompb.WriteRequest, 0, numSeries/batchSize)
	for off := 0; off < numSeries; off += batchSize {
		req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, batchSize)}
		families := map[string]bool{}
		for _, l := range lsets[off : off+batchSize] {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: l, Samples: []prompb.Sample{{}}})
			if name := l[0].Value; withMetadata && !families[name] {
				families[name] = true
				req.Metadata = append(req.Metadata, prompb.MetricMetadata{
					MetricFamilyName: name, Type: prompb.MetricMetadata_GAUGE, Help: "Help of " + name + ".",
				})
			}
		}
		batches = append(batches, req)
	}
	push := func(round int, req *prompb.WriteRequest) {
		for i := range req.Timeseries {
			req.Timeseries[i].Samples[0] = prompb.Sample{Timestamp: base + int64(round)*15_000, Value: float64(round)}
		}
		resp, err := pushFn(ctxFor("bench"), req)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Rejections) != 0 {
			b.Fatalf("rejections: %s", resp)
		}
	}
	// Create every series first: the benchmark measures steady-state appends.
	for _, req := range batches {
		push(0, req)
	}

	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		round := 1 + n/len(batches)
		push(round, batches[n%len(batches)])
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/sample")
}

// BenchmarkPrometheusTSDBAppendReference is the reference for BenchmarkIngesterPush: the
// same batches appended into a plain Prometheus TSDB (default options, WAL on) the way
// Prometheus' own remote-write handler does (labels from prompb, Append, Commit).
// Compare ns/sample of the two in one run.
func BenchmarkPrometheusTSDBAppendReference(b *testing.B) {
	const (
		numSeries = 100_000
		batchSize = 2000
	)
	db, err := tsdb.Open(b.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	lsets := benchSeries(numSeries)
	base := time.Now().Add(-time.Hour).UnixMilli()
	builder := labels.NewScratchBuilder(16)
	appendBatch := func(round int, off int) {
		app := db.Appender(context.Background())
		for _, ls := range lsets[off : off+batchSize] {
			builder.Reset()
			for _, l := range ls {
				builder.Add(l.Name, l.Value)
			}
			if _, err := app.Append(0, builder.Labels(), base+int64(round)*15_000, float64(round)); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for off := 0; off < numSeries; off += batchSize {
		appendBatch(0, off)
	}
	batches := numSeries / batchSize
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		appendBatch(1+n/batches, (n%batches)*batchSize)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/sample")
}
