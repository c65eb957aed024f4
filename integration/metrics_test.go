package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestRemoteWriteV1ThenPromQL: what a Prometheus with remote_write and a Grafana datasource
// see — samples, native histograms, exemplars and metadata go in, the Prometheus API answers
// on both /prometheus/api/v1 and /api/v1.
func TestRemoteWriteV1ThenPromQL(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	start := now.Add(-10 * time.Minute)

	req := &prompb.WriteRequest{
		Metadata: []prompb.MetricMetadata{{
			MetricFamilyName: "http_requests_total", Type: prompb.MetricMetadata_COUNTER,
			Help: "Requests served.", Unit: "",
		}},
	}
	for _, code := range []string{"200", "500"} {
		ts := prompb.TimeSeries{Labels: series("__name__", "http_requests_total", "code", code, "instance", "a:80", "job", "api")}
		for i := 0; i <= 40; i++ {
			v := float64(i * 10)
			if code == "500" {
				v = float64(i)
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: start.Add(time.Duration(i) * 15 * time.Second).UnixMilli(), Value: v})
		}
		if code == "500" {
			ts.Exemplars = []prompb.Exemplar{{Labels: series("trace_id", "0af7651916cd43dd8448eb211c80319c"), Value: 1, Timestamp: now.Add(-time.Minute).UnixMilli()}}
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	hts := prompb.TimeSeries{Labels: series("__name__", "rpc_duration_seconds", "job", "api")}
	for i := 0; i <= 40; i++ {
		h := &histogram.Histogram{
			Count: uint64(10 * (i + 1)), Sum: float64(i+1) * 1.5, Schema: 0, ZeroThreshold: 1e-128,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []int64{int64(5 * (i + 1)), 0},
		}
		hts.Histograms = append(hts.Histograms, prompb.FromIntHistogram(start.Add(time.Duration(i)*15*time.Second).UnixMilli(), h))
	}
	req.Timeseries = append(req.Timeseries, hts)

	c := writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, "")
	if _, err := storeV1(ctx, c, req); err != nil {
		t.Fatalf("remote write v1: %v", err)
	}

	for _, base := range []string{"/prometheus", ""} {
		api := queryAPI(t, in, base, "")
		t.Run("base="+base, func(t *testing.T) {
			// Instant query: rate over the 10 minutes of counters.
			v, _, err := api.Query(ctx, `sum by (code) (increase(http_requests_total[5m]))`, now)
			if err != nil {
				t.Fatal(err)
			}
			vec := v.(model.Vector)
			if len(vec) != 2 {
				t.Fatalf("increase by code: %v", vec)
			}
			got := map[string]float64{}
			for _, s := range vec {
				got[string(s.Metric["code"])] = float64(s.Value)
			}
			// 5m window holds 20 intervals of 15s: +10 per interval for 200, +1 for 500,
			// extrapolated by Prometheus' increase() to the window edges.
			if got["200"] < 190 || got["200"] > 210 || got["500"] < 19 || got["500"] > 21 {
				t.Fatalf("increase: %v", got)
			}

			// Range query.
			m, _, err := api.QueryRange(ctx, `http_requests_total{code="200"}`, promv1.Range{Start: start, End: start.Add(10 * time.Minute), Step: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			mat := m.(model.Matrix)
			if len(mat) != 1 || len(mat[0].Values) != 11 || float64(mat[0].Values[10].Value) != 400 {
				t.Fatalf("range query: %v", mat)
			}

			// Native histogram quantile.
			hv, _, err := api.Query(ctx, `histogram_count(rpc_duration_seconds)`, start.Add(10*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if hvec := hv.(model.Vector); len(hvec) != 1 || float64(hvec[0].Value) != 410 {
				t.Fatalf("histogram_count: %v", hv)
			}

			// Series, labels, label values (what Grafana's pickers call).
			ss, _, err := api.Series(ctx, []string{`{job="api"}`}, start, now)
			if err != nil || len(ss) != 3 {
				t.Fatalf("series: %v %v", ss, err)
			}
			names, _, err := api.LabelNames(ctx, nil, start, now)
			if err != nil || !containsAll(names, "__name__", "code", "instance", "job") {
				t.Fatalf("label names: %v %v", names, err)
			}
			vals, _, err := api.LabelValues(ctx, "code", []string{`http_requests_total`}, start, now)
			if err != nil || len(vals) != 2 {
				t.Fatalf("label values: %v %v", vals, err)
			}

			// Metadata carried from the write.
			md, err := api.Metadata(ctx, "http_requests_total", "")
			if err != nil || len(md["http_requests_total"]) == 0 || md["http_requests_total"][0].Type != promv1.MetricTypeCounter || md["http_requests_total"][0].Help != "Requests served." {
				t.Fatalf("metadata: %v %v", md, err)
			}

			// Exemplars.
			ex, err := api.QueryExemplars(ctx, `http_requests_total`, start, now)
			if err != nil || len(ex) != 1 || len(ex[0].Exemplars) != 1 || ex[0].Exemplars[0].Labels["trace_id"] != "0af7651916cd43dd8448eb211c80319c" {
				t.Fatalf("exemplars: %+v %v", ex, err)
			}

			// Build info answers (Grafana probes it).
			if _, err := api.Buildinfo(ctx); err != nil {
				t.Fatalf("buildinfo: %v", err)
			}
		})
	}

	// Grafana posts queries as forms; errors come back in Prometheus' shape.
	resp, err := http.PostForm(in.URL("/prometheus/api/v1/query"), map[string][]string{"query": {"sum(rate(http_requests_total[5m])"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"errorType":"bad_data"`) {
		t.Fatalf("bad query: %d %s", resp.StatusCode, body)
	}
}

// TestRemoteWriteV2Headers: a remote write 2.0 sender learns exactly what was written.
func TestRemoteWriteV2Headers(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	c := writeClient(t, in, "/api/v1/write", remoteapi.WriteV2MessageType, "")
	var ss []seriesV2
	for i := 0; i < 5; i++ {
		ss = append(ss, seriesV2{
			lset:    labels.FromStrings("__name__", "rw2_gauge", "idx", fmt.Sprint(i)),
			samples: []prompb.Sample{{Timestamp: now.Add(-time.Minute).UnixMilli(), Value: float64(i)}, {Timestamp: now.UnixMilli(), Value: float64(i + 1)}},
			typ:     writev2.Metadata_METRIC_TYPE_GAUGE, help: "A gauge sent with RW 2.0.",
		})
	}
	stats, err := storeV2(ctx, c, ss)
	if err != nil {
		t.Fatalf("remote write v2: %v", err)
	}
	if !stats.Confirmed || stats.Samples != 10 {
		t.Fatalf("written stats = %+v, want 10 samples confirmed", stats)
	}
	api := queryAPI(t, in, "/prometheus", "")
	v, _, err := api.Query(ctx, `sum(rw2_gauge)`, now)
	if err != nil {
		t.Fatal(err)
	}
	if vec := v.(model.Vector); len(vec) != 1 || float64(vec[0].Value) != 15 {
		t.Fatalf("sum(rw2_gauge) = %v, want 15", v)
	}
	md, err := api.Metadata(ctx, "rw2_gauge", "")
	if err != nil || len(md["rw2_gauge"]) == 0 || md["rw2_gauge"][0].Help != "A gauge sent with RW 2.0." {
		t.Fatalf("metadata from RW2: %v %v", md, err)
	}
}

// TestTenantIsolation: with multi-tenancy on, a tenant sees only its own data and a request
// without a tenant is refused.
func TestTenantIsolation(t *testing.T) {
	in := startVigil(t, t.TempDir(), "-auth.multitenancy-enabled")
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  series("__name__", "secret_metric", "team", "a"),
		Samples: []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 42}},
	}}}
	if _, err := storeV1(ctx, writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, "team-a"), req); err != nil {
		t.Fatal(err)
	}
	if _, err := storeV1(ctx, writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, ""), req); err == nil {
		t.Fatal("write without tenant accepted")
	}

	a := queryAPI(t, in, "/prometheus", "team-a")
	v, _, err := a.Query(ctx, `secret_metric`, now)
	if err != nil || len(v.(model.Vector)) != 1 {
		t.Fatalf("tenant a: %v %v", v, err)
	}
	b := queryAPI(t, in, "/prometheus", "team-b")
	v, _, err = b.Query(ctx, `secret_metric`, now)
	if err != nil || len(v.(model.Vector)) != 0 {
		t.Fatalf("tenant b sees tenant a's data: %v %v", v, err)
	}
	names, _, err := b.LabelValues(ctx, "__name__", nil, now.Add(-time.Hour), now)
	if err != nil || len(names) != 0 {
		t.Fatalf("tenant b sees tenant a's metric names: %v %v", names, err)
	}

	resp, err := http.Get(in.URL("/prometheus/api/v1/query?query=secret_metric"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("query without tenant: %s, want 401", resp.Status)
	}
}

// TestKill9KeepsAcknowledgedSamples: every sample and every metric metadata change
// acknowledged with 2xx before a SIGKILL is queryable after a restart.
func TestKill9KeepsAcknowledgedSamples(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, "")
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	const seriesPerBatch = 50

	var (
		mu    sync.Mutex
		acked []int64 // timestamps of batches that got a 2xx
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			ts := base.Add(time.Duration(i) * time.Second).UnixMilli()
			req := &prompb.WriteRequest{Metadata: probeMetadata(i)}
			for s := 0; s < seriesPerBatch; s++ {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  series("__name__", "durability_probe", "series", fmt.Sprint(s)),
					Samples: []prompb.Sample{{Timestamp: ts, Value: float64(i)}},
				})
			}
			if _, err := storeV1(ctx, c, req); err != nil {
				return // the process died under us: this batch was never acknowledged
			}
			mu.Lock()
			acked = append(acked, ts)
			mu.Unlock()
		}
	}()
	testutil.Eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 200 {
			return fmt.Errorf("%d batches acknowledged so far", len(acked))
		}
		return nil
	})
	in.kill9()
	cancel()
	<-done
	mu.Lock()
	ackedCopy := append([]int64(nil), acked...)
	mu.Unlock()

	in.restart()
	api := queryAPI(t, in, "/prometheus", "")
	evalAt := time.UnixMilli(ackedCopy[len(ackedCopy)-1]).Add(time.Second)
	v, _, err := api.Query(context.Background(), `durability_probe[1h]`, evalAt)
	if err != nil {
		t.Fatal(err)
	}
	mat := v.(model.Matrix)
	if len(mat) != seriesPerBatch {
		t.Fatalf("got %d series after restart, want %d", len(mat), seriesPerBatch)
	}
	for _, s := range mat {
		have := map[int64]bool{}
		for _, p := range s.Values {
			have[int64(p.Timestamp)] = true
		}
		for _, ts := range ackedCopy {
			if !have[ts] {
				t.Fatalf("series %v lost acknowledged sample at %d (%d acked batches, %d samples present)", s.Metric, ts, len(ackedCopy), len(s.Values))
			}
		}
	}

	// Metadata: every family named by an acknowledged batch is there, and the HELP of
	// durability_probe is the one of the last acknowledged change (or of the next change,
	// sent but not acknowledged before the kill).
	md, err := api.Metadata(context.Background(), "", "")
	if err != nil {
		t.Fatalf("metadata after restart: %v", err)
	}
	lastAcked := len(ackedCopy) - 1
	for i := 0; i <= lastAcked; i += probeMetadataEvery {
		name := probeFamily(i)
		if m := md[name]; len(m) != 1 || m[0].Type != promv1.MetricTypeCounter || m[0].Help != probeFamilyHelp(i) || m[0].Unit != "bytes" {
			t.Fatalf("metadata of %s, acknowledged in batch %d of %d, after kill -9 and restart: %+v (%d families present)", name, i, len(ackedCopy), m, len(md))
		}
	}
	lastChange := lastAcked - lastAcked%probeMetadataEvery
	m := md["durability_probe"]
	if len(m) != 1 || m[0].Type != promv1.MetricTypeGauge || (m[0].Help != probeHelp(lastChange) && m[0].Help != probeHelp(lastChange+probeMetadataEvery)) {
		t.Fatalf("metadata of durability_probe after kill -9 and restart: %+v, want the HELP of batch %d %q", m, lastChange, probeHelp(lastChange))
	}
}

// probeMetadataEvery: every probeMetadataEvery-th batch of the kill -9 test changes
// metadata (a new family and a new HELP for durability_probe); the others resend the
// unchanged metadata of durability_probe.
const probeMetadataEvery = 10

func probeMetadata(batch int) []prompb.MetricMetadata {
	changed := batch - batch%probeMetadataEvery
	md := []prompb.MetricMetadata{{MetricFamilyName: "durability_probe", Type: prompb.MetricMetadata_GAUGE, Help: probeHelp(changed)}}
	if batch%probeMetadataEvery == 0 {
		md = append(md, prompb.MetricMetadata{MetricFamilyName: probeFamily(batch), Type: prompb.MetricMetadata_COUNTER, Help: probeFamilyHelp(batch), Unit: "bytes"})
	}
	return md
}

func probeHelp(batch int) string {
	return fmt.Sprintf("Durability probe, metadata of batch %d.", batch)
}
func probeFamily(batch int) string     { return fmt.Sprintf("durability_family_%d", batch) }
func probeFamilyHelp(batch int) string { return fmt.Sprintf("Family announced in batch %d.", batch) }

func containsAll[S ~string](have []S, want ...string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[string(h)] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}
