package distributor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"

	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// benchRequests builds 100k series with label sets shaped like a Kubernetes
// scrape (node-exporter / kube-state-metrics / app metrics), split into
// requests of 2000 series as Prometheus' remote write sends by default
// (max_samples_per_send).
func benchRequests(b *testing.B, totalSeries, perRequest int) [][]byte {
	b.Helper()
	metrics := []string{
		"http_requests_total", "http_request_duration_seconds_bucket", "process_cpu_seconds_total",
		"container_memory_working_set_bytes", "node_network_receive_bytes_total", "go_goroutines",
		"kube_pod_status_phase", "grpc_server_handled_total", "node_cpu_seconds_total", "up",
	}
	now := time.Now().UnixMilli()
	var out [][]byte
	req := &prompb.WriteRequest{}
	for i := 0; i < totalSeries; i++ {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels: series(
				"__name__", metrics[i%len(metrics)],
				"cluster", "prod-eu-west-1",
				"container", fmt.Sprintf("app-%d", i%17),
				"endpoint", "http-metrics",
				"instance", fmt.Sprintf("10.42.%d.%d:8080", (i/250)%256, i%250),
				"job", fmt.Sprintf("namespace-%d/app-%d", i%23, i%17),
				"namespace", fmt.Sprintf("namespace-%d", i%23),
				"pod", fmt.Sprintf("app-%d-7d9f8b6c5-%05d", i%17, i/10),
				"service", fmt.Sprintf("app-%d", i%17),
			),
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: now}},
		})
		if len(req.Timeseries) == perRequest {
			out = append(out, encodeV1(b, req))
			req = &prompb.WriteRequest{}
		}
	}
	if len(req.Timeseries) > 0 {
		out = append(out, encodeV1(b, req))
	}
	return out
}

// BenchmarkDistributorPushRW1 measures the HTTP remote write 1.0 path
// (decode, validate, limits, shard, push) into a no-op ingester. The
// "prometheus" sub-benchmark runs Prometheus' own receiver
// (storage/remote.NewWriteHandler) into a no-op appender on the same
// requests, so the two write paths can be compared in one run.
func BenchmarkDistributorPushRW1(b *testing.B) {
	b.Run("vigil", benchmarkVigilRW1)
	b.Run("prometheus", benchmarkPrometheusRW1)
}

func benchmarkVigilRW1(b *testing.B) {
	env := newTestEnv(b, envOptions{limits: func(l *validation.Limits) {
		l.IngestionRate = 0 // measure the path, not the limiter's refusals
		l.CreationGracePeriod = 24 * time.Hour
	}})
	for _, fi := range env.ingesters {
		fi.discard = true
	}
	const perRequest = 2000
	reqs := benchRequests(b, 100_000, perRequest)
	runRW1Bench(b, env.srv, "/api/v1/push", reqs, perRequest)
}

// noopAppender accepts everything and stores nothing.
type noopAppender struct{ storage.Appender }

func (noopAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	return 1, nil
}
func (noopAppender) AppendExemplar(storage.SeriesRef, labels.Labels, exemplar.Exemplar) (storage.SeriesRef, error) {
	return 1, nil
}
func (noopAppender) AppendHistogram(storage.SeriesRef, labels.Labels, int64, *histogram.Histogram, *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return 1, nil
}
func (noopAppender) UpdateMetadata(storage.SeriesRef, labels.Labels, metadata.Metadata) (storage.SeriesRef, error) {
	return 1, nil
}
func (noopAppender) SetOptions(*storage.AppendOptions) {}
func (noopAppender) Commit() error                     { return nil }
func (noopAppender) Rollback() error                   { return nil }

type noopAppendable struct{}

func (noopAppendable) Appender(context.Context) storage.Appender { return noopAppender{} }

func benchmarkPrometheusRW1(b *testing.B) {
	const perRequest = 2000
	reqs := benchRequests(b, 100_000, perRequest)
	h := remote.NewWriteHandler(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), noopAppendable{},
		remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType}, false, false, false)
	srv := httptest.NewServer(h)
	defer srv.Close()
	runRW1Bench(b, srv, "/", reqs, perRequest)
}

func runRW1Bench(b *testing.B, srv *httptest.Server, path string, reqs [][]byte, perRequest int) {
	client := srv.Client()
	url := srv.URL + path

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		httpReq, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(reqs[i%len(reqs)]))
		if err != nil {
			b.Fatal(err)
		}
		httpReq.Header.Set("Content-Type", "application/x-protobuf")
		httpReq.Header.Set("Content-Encoding", "snappy")
		resp, err := client.Do(httpReq)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perRequest)/b.Elapsed().Seconds(), "samples/s")
}
