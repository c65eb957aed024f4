package ingester

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/thanos-io/objstore"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

func TestPushThenQueryOverGRPC(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()

	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		// Deliberately unsorted labels and series: the ingester sorts both.
		series([]string{"job", "b", "__name__", "up"}, prompb.Sample{Timestamp: base, Value: 1}, prompb.Sample{Timestamp: base + 1000, Value: 0}),
		series([]string{"__name__", "up", "job", "a"}, prompb.Sample{Timestamp: base, Value: 1}),
		// An empty label value is the same as the label being absent.
		series([]string{"__name__", "other", "job", "a", "empty", ""}, prompb.Sample{Timestamp: base, Value: 7}),
	}}
	resp, err := c.Push(ctxFor("t1"), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 4 || len(resp.Rejections) != 0 {
		t.Fatalf("unexpected response %s", resp)
	}

	got := querySeries(t, c, "t1", base-1, base+2000, eqMatcher("__name__", "up"))
	if len(got) != 2 {
		t.Fatalf("want 2 series, got %d", len(got))
	}
	if got[0].lset.String() != `{__name__="up", job="a"}` || got[1].lset.String() != `{__name__="up", job="b"}` {
		t.Fatalf("series not sorted or wrong: %v, %v", got[0].lset, got[1].lset)
	}
	if len(got[1].samples) != 2 || got[1].samples[1].t != base+1000 || got[1].samples[1].v != 0 {
		t.Fatalf("unexpected samples %+v", got[1].samples)
	}

	// Time range filtering and SkipChunks.
	if got := querySeries(t, c, "t1", base+5000, base+6000, eqMatcher("__name__", "up")); len(got) != 0 {
		t.Fatalf("expected no series outside the range, got %d", len(got))
	}
	stream, err := c.Series(ctxFor("t1"), &storepb.SeriesRequest{MinTime: base, MaxTime: base, SkipChunks: true,
		Matchers: []storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "job", Value: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if s := r.GetSeries(); s != nil {
			if len(s.Chunks) != 0 {
				t.Fatal("SkipChunks returned chunks")
			}
			names = append(names, client.PromLabelsFromZLabels(s.Labels).Get("__name__"))
		}
	}
	if len(names) != 2 || names[0] != "other" || names[1] != "up" {
		t.Fatalf("skip-chunks series %v", names)
	}

	ln, err := c.LabelNames(ctxFor("t1"), &storepb.LabelNamesRequest{Start: base - 1, End: base + 2000})
	if err != nil {
		t.Fatal(err)
	}
	if len(ln.Names) != 2 || ln.Names[0] != "__name__" || ln.Names[1] != "job" {
		t.Fatalf("label names %v", ln.Names)
	}
	lv, err := c.LabelValues(ctxFor("t1"), &storepb.LabelValuesRequest{Label: "job", Start: base - 1, End: base + 2000,
		Matchers: []storepb.LabelMatcher{eqMatcher("__name__", "up")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(lv.Values) != 2 || lv.Values[0] != "a" || lv.Values[1] != "b" {
		t.Fatalf("label values %v", lv.Values)
	}
	info, err := c.Info(ctxFor("t1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Store.MinTime != base || info.Store.MaxTime != base+1000 {
		t.Fatalf("info time range %d-%d, want %d-%d", info.Store.MinTime, info.Store.MaxTime, base, base+1000)
	}
}

func TestHistogramsExemplarsMetadataRoundTrip(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()

	ih := &histogram.Histogram{
		Count: 5, ZeroCount: 1, Sum: 18.4, Schema: 1, ZeroThreshold: 0.001,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		PositiveBuckets: []int64{1, 1}, // absolute 1, 2
		NegativeSpans:   []histogram.Span{{Offset: 0, Length: 1}},
		NegativeBuckets: []int64{1},
	}
	fh := &histogram.FloatHistogram{
		Count: 3.5, Sum: 2.5, Schema: 0,
		PositiveSpans:   []histogram.Span{{Offset: 1, Length: 1}},
		PositiveBuckets: []float64{3.5},
	}
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				Labels:     []prompb.Label{{Name: "__name__", Value: "req_duration"}},
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(base, ih), prompb.FromIntHistogram(base+1000, ih)},
				Exemplars: []prompb.Exemplar{{
					Labels: []prompb.Label{{Name: "trace_id", Value: "0af7651916cd43dd8448eb211c80319c"}}, Value: 0.7, Timestamp: base,
				}},
			},
			{
				Labels:     []prompb.Label{{Name: "__name__", Value: "gauge_hist"}},
				Histograms: []prompb.Histogram{prompb.FromFloatHistogram(base, fh)},
			},
		},
		Metadata: []prompb.MetricMetadata{
			{MetricFamilyName: "req_duration", Type: prompb.MetricMetadata_HISTOGRAM, Help: "Request duration.", Unit: "seconds"},
			{MetricFamilyName: "gauge_hist", Type: prompb.MetricMetadata_GAUGEHISTOGRAM, Help: "old"},
			{MetricFamilyName: "gauge_hist", Type: prompb.MetricMetadata_GAUGEHISTOGRAM, Help: "A gauge histogram."},
		},
	}
	resp, err := c.Push(ctxFor("t1"), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.HistogramsWritten != 3 || resp.ExemplarsWritten != 1 || len(resp.Rejections) != 0 {
		t.Fatalf("unexpected response %s", resp)
	}

	got := querySeries(t, c, "t1", base, base+1000)
	if len(got) != 2 {
		t.Fatalf("want 2 series, got %d", len(got))
	}
	// Sorted: gauge_hist < req_duration.
	if len(got[0].samples) != 1 || got[0].samples[0].fh == nil || !got[0].samples[0].fh.Equals(fh) {
		t.Fatalf("float histogram mismatch: %+v", got[0].samples)
	}
	if len(got[1].samples) != 2 || got[1].samples[1].h == nil || got[1].samples[1].h.Count != 5 || got[1].samples[1].h.Sum != 18.4 {
		t.Fatalf("int histogram mismatch: %+v", got[1].samples)
	}
	if !got[1].samples[0].h.Compact(0).Equals(ih.Copy().Compact(0)) {
		t.Fatalf("int histogram buckets differ: %v vs %v", got[1].samples[0].h, ih)
	}

	ex, err := c.Exemplars(ctxFor("t1"), &exemplarspb.ExemplarsRequest{Query: `rate(req_duration[5m])`, Start: base - 1, End: base + 1})
	if err != nil {
		t.Fatal(err)
	}
	exResp, err := ex.Recv()
	if err != nil {
		t.Fatal(err)
	}
	d := exResp.GetData()
	if d == nil || len(d.Exemplars) != 1 || d.Exemplars[0].Value != 0.7 || d.Exemplars[0].Ts != base ||
		client.PromLabelsFromZLabels(d.Exemplars[0].Labels.Labels).Get("trace_id") != "0af7651916cd43dd8448eb211c80319c" ||
		client.PromLabelsFromZLabels(d.SeriesLabels.Labels).Get("__name__") != "req_duration" {
		t.Fatalf("unexpected exemplars %v", exResp)
	}

	md, err := c.MetricMetadata(ctxFor("t1"), &metadatapb.MetricMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mdResp, err := md.Recv()
	if err != nil {
		t.Fatal(err)
	}
	m := mdResp.GetMetadata().Metadata
	if len(m) != 2 || m["req_duration"].Metas[0].Type != "histogram" || m["req_duration"].Metas[0].Unit != "seconds" ||
		m["gauge_hist"].Metas[0].Help != "A gauge histogram." || m["gauge_hist"].Metas[0].Type != "gaugehistogram" {
		t.Fatalf("unexpected metadata %v", m)
	}
}

func TestPerSeriesRejectionsKeepTheRest(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	a := []string{"__name__", "a"}
	if _, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series(a, prompb.Sample{Timestamp: base, Value: 1}),
	}}); err != nil {
		t.Fatal(err)
	}

	resp, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series(a,
			prompb.Sample{Timestamp: base - 10_000, Value: 2}, // out of order
			prompb.Sample{Timestamp: base - 5_000, Value: 2},  // out of order
			prompb.Sample{Timestamp: base, Value: 3},          // duplicate timestamp, different value
			prompb.Sample{Timestamp: base + 1000, Value: 4},   // fine
		),
		series([]string{"__name__", "b"}, prompb.Sample{Timestamp: base, Value: 5}),
		{Labels: nil, Samples: []prompb.Sample{{Timestamp: base, Value: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 2 {
		t.Fatalf("samples written %d, want 2: %s", resp.SamplesWritten, resp)
	}
	byReason := map[string]client.Rejection{}
	for _, r := range resp.Rejections {
		byReason[r.Reason] = r
	}
	if r := byReason[client.ReasonOutOfOrder]; r.Count != 2 || r.Series != `{__name__="a"}` || r.Message == "" {
		t.Fatalf("out-of-order rejection %+v", r)
	}
	if r := byReason[client.ReasonDuplicateSample]; r.Count != 1 {
		t.Fatalf("duplicate rejection %+v", r)
	}
	if r := byReason[client.ReasonInvalidSeries]; r.Count != 1 {
		t.Fatalf("invalid series rejection %+v", r)
	}

	got := querySeries(t, c, "t1", base-20_000, base+2000)
	if len(got) != 2 || len(got[0].samples) != 2 || got[0].samples[0].v != 1 || got[0].samples[1].v != 4 || got[1].samples[0].v != 5 {
		t.Fatalf("unexpected stored data %+v", got)
	}

	// After a flush, the head starts later: old samples are too old.
	if err := ing.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err = c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "c"}, prompb.Sample{Timestamp: base - 10_000, Value: 1}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rejections) != 1 || resp.Rejections[0].Reason != client.ReasonTooOld {
		t.Fatalf("expected too_old, got %s", resp)
	}
	// ...while samples after the flushed range are accepted right away.
	resp, err = c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series(a, prompb.Sample{Timestamp: base + 2000, Value: 9}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 1 || len(resp.Rejections) != 0 {
		t.Fatalf("push after flush: %s", resp)
	}
}

func TestOutOfOrderWindow(t *testing.T) {
	ing := startIngester(t, testConfig(t), fixedLimits{ooo: time.Hour}, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	a := []string{"__name__", "a"}
	if _, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series(a, prompb.Sample{Timestamp: base, Value: 1}),
	}}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series(a, prompb.Sample{Timestamp: base - 60_000, Value: 2}, prompb.Sample{Timestamp: base - 2*3600_000, Value: 3}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 1 || len(resp.Rejections) != 1 || resp.Rejections[0].Reason != client.ReasonTooOld {
		t.Fatalf("unexpected response %s", resp)
	}
	got := querySeries(t, c, "t1", base-3*3600_000, base)
	if len(got) != 1 || len(got[0].samples) != 2 || got[0].samples[0].t != base-60_000 {
		t.Fatalf("unexpected data %+v", got)
	}
}

func TestSeriesLimits(t *testing.T) {
	cfg := testConfig(t)
	limits := fixedLimits{perTenant: 3, perMetric: 2}
	ing := startIngester(t, cfg, limits, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	s := func(name, inst string, ts int64) prompb.TimeSeries {
		ts0 := series([]string{"__name__", name, "instance", inst}, prompb.Sample{Timestamp: ts, Value: 1})
		ts0.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "x"}}, Value: 1, Timestamp: ts}}
		return ts0
	}
	resp, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		s("a", "1", base), s("a", "2", base), s("a", "3", base), // third "a" hits the per-metric limit
		s("b", "1", base), s("b", "2", base), // second "b" hits the per-tenant limit (3 series)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 3 || len(resp.Rejections) != 2 {
		t.Fatalf("unexpected response %s", resp)
	}
	if r := resp.Rejections[0]; r.Reason != client.ReasonPerMetricSeriesLimit || r.Series != `{__name__="a", instance="3"}` || r.Count != 2 {
		t.Fatalf("per-metric rejection %+v", r)
	}
	if r := resp.Rejections[1]; r.Reason != client.ReasonPerUserSeriesLimit || r.Series != `{__name__="b", instance="2"}` {
		t.Fatalf("per-tenant rejection %+v", r)
	}
	// Existing series keep accepting samples at the limit.
	resp, err = c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s("a", "1", base+1000), s("b", "1", base+1000)}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 2 || len(resp.Rejections) != 0 {
		t.Fatalf("appends to existing series rejected: %s", resp)
	}
	// Another tenant has its own budget.
	resp, err = c.Push(ctxFor("t2"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s("a", "1", base), s("a", "2", base)}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 2 {
		t.Fatalf("tenant t2 limited by t1's series: %s", resp)
	}
}

func TestSeriesLimitsNotAppliedDuringWALReplay(t *testing.T) {
	cfg := testConfig(t)
	base := time.Now().UnixMilli()
	ing, err := New(cfg, fixedLimits{}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ing.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ing.AwaitRunning(context.Background()); err != nil {
		t.Fatal(err)
	}
	var req prompb.WriteRequest
	for _, inst := range []string{"1", "2", "3"} {
		req.Timeseries = append(req.Timeseries, series([]string{"__name__", "a", "instance", inst}, prompb.Sample{Timestamp: base, Value: 1}))
	}
	if resp, err := ing.Push(ctxFor("t1"), &req); err != nil || resp.SamplesWritten != 3 {
		t.Fatalf("push: %v %v", resp, err)
	}
	ing.StopAsync()
	if err := ing.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Limit lowered below what the WAL holds: replay keeps everything, new series are refused.
	ing2 := startIngester(t, cfg, fixedLimits{perMetric: 2}, nil)
	c := serveGRPC(t, ing2)
	if got := querySeries(t, c, "t1", base, base); len(got) != 3 {
		t.Fatalf("replayed %d series, want 3", len(got))
	}
	resp, err := ing2.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "a", "instance", "4"}, prompb.Sample{Timestamp: base + 1, Value: 1}),
		series([]string{"__name__", "a", "instance", "1"}, prompb.Sample{Timestamp: base + 1, Value: 1}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 1 || len(resp.Rejections) != 1 || resp.Rejections[0].Reason != client.ReasonPerMetricSeriesLimit {
		t.Fatalf("unexpected response after replay %s", resp)
	}
}

func TestTenantIsolation(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	for _, tenant := range []string{"team-a", "team-b"} {
		if _, err := c.Push(ctxFor(tenant), &prompb.WriteRequest{
			Timeseries: []prompb.TimeSeries{series([]string{"__name__", "secret", "owner", tenant}, prompb.Sample{Timestamp: base, Value: 1})},
			Metadata:   []prompb.MetricMetadata{{MetricFamilyName: "only_" + tenant, Type: prompb.MetricMetadata_COUNTER}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tenant := range []string{"team-a", "team-b"} {
		got := querySeries(t, c, tenant, base-1, base+1)
		if len(got) != 1 || got[0].lset.Get("owner") != tenant {
			t.Fatalf("tenant %s sees %+v", tenant, got)
		}
		lv, err := c.LabelValues(ctxFor(tenant), &storepb.LabelValuesRequest{Label: "owner", Start: base - 1, End: base + 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(lv.Values) != 1 || lv.Values[0] != tenant {
			t.Fatalf("tenant %s label values %v", tenant, lv.Values)
		}
		md, err := c.MetricMetadata(ctxFor(tenant), &metadatapb.MetricMetadataRequest{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := md.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m := r.GetMetadata().Metadata; len(m) != 1 || m["only_"+tenant].Metas == nil {
			t.Fatalf("tenant %s metadata %v", tenant, m)
		}
	}
	if got := querySeries(t, c, "team-c", base-1, base+1); len(got) != 0 {
		t.Fatalf("unknown tenant sees %d series", len(got))
	}

	// No tenant, or a tenant that would escape the data dir, is refused.
	// (Over gRPC dskit's server interceptor refuses it before the ingester sees it.)
	if _, err := c.Push(context.Background(), &prompb.WriteRequest{}); err == nil {
		t.Fatal("push without tenant over gRPC succeeded")
	}
	if _, err := ing.Push(context.Background(), &prompb.WriteRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("push without tenant: %v", err)
	}
	_, err := c.Push(ctxFor(".."), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", "x"}, prompb.Sample{Timestamp: base, Value: 1})}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("push with tenant '..': %v", err)
	}
}

func TestMetadataSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	ing, err := New(cfg, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{MetricFamilyName: "http_requests", Type: prompb.MetricMetadata_COUNTER, Help: "Requests.", Unit: "requests"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}

	ing2 := startIngester(t, cfg, nil, nil)
	c := serveGRPC(t, ing2)
	md, err := c.MetricMetadata(ctxFor("t1"), &metadatapb.MetricMetadataRequest{Metric: "http_requests"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := md.Recv()
	if err != nil {
		t.Fatal(err)
	}
	m := r.GetMetadata().Metadata["http_requests"].Metas
	if len(m) != 1 || m[0].Type != "counter" || m[0].Help != "Requests." || m[0].Unit != "requests" {
		t.Fatalf("metadata after restart: %v", m)
	}
}

// TestConcurrentPushQueryFlush runs pushes, queries and flushes of several tenants at
// once; with -race it checks the locking between them.
func TestConcurrentPushQueryFlush(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, objstore.NewInMemBucket())
	c := serveGRPC(t, ing)
	base := time.Now().Add(-time.Hour).UnixMilli()
	const rounds = 50
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for _, tenant := range []string{"a", "b", "c"} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				resp, err := c.Push(ctxFor(tenant), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
					series([]string{"__name__", "m", "tenant", tenant}, prompb.Sample{Timestamp: base + int64(r)*1000, Value: float64(r)}),
				}})
				if err != nil {
					errs <- err
					return
				}
				if resp.SamplesWritten != 1 {
					errs <- fmt.Errorf("tenant %s round %d: %s", tenant, r, resp)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if _, err := c.LabelValues(ctxFor(tenant), &storepb.LabelValuesRequest{Label: "tenant", Start: base, End: base + rounds*1000}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := 0; r < 5; r++ {
			if err := ing.FlushAll(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every acknowledged sample is in the head or in a block.
	for _, tenant := range []string{"a", "b", "c"} {
		got := querySeries(t, c, tenant, base, base+rounds*1000)
		if len(got) != 1 || len(got[0].samples) != rounds {
			t.Fatalf("tenant %s: %+v", tenant, got)
		}
	}
}

func TestIngesterMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ing, err := New(testConfig(t), nil, nil, nil, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = services.StopAndAwaitTerminated(context.Background(), ing) }()
	base := time.Now().UnixMilli()
	for _, ts := range []int64{base, base - 1} {
		if _, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"__name__", "a"}, prompb.Sample{Timestamp: ts, Value: 1}),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP vigil_ingester_memory_series Series in the TSDB heads of all tenants.
# TYPE vigil_ingester_memory_series gauge
vigil_ingester_memory_series 1
# HELP vigil_ingester_rejected_samples_total Samples, histograms and exemplars the ingester rejected, by reason.
# TYPE vigil_ingester_rejected_samples_total counter
vigil_ingester_rejected_samples_total{reason="out_of_order"} 1
# HELP vigil_ingester_samples_appended_total Float samples committed to a TSDB WAL.
# TYPE vigil_ingester_samples_appended_total counter
vigil_ingester_samples_appended_total 1
# HELP vigil_ingester_tenants Tenants with an open TSDB on this ingester.
# TYPE vigil_ingester_tenants gauge
vigil_ingester_tenants 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"vigil_ingester_memory_series", "vigil_ingester_rejected_samples_total", "vigil_ingester_samples_appended_total", "vigil_ingester_tenants"); err != nil {
		t.Fatal(err)
	}

	// The tenants' own TSDB metrics are exported with a tenant label, and the whole
	// registry gathers cleanly with two tenants (same metric names in both TSDBs).
	if _, err := ing.Push(ctxFor("t2"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "a"}, prompb.Sample{Timestamp: base, Value: 1}),
		series([]string{"__name__", "b"}, prompb.Sample{Timestamp: base, Value: 1}),
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("gather: %v", err)
	}
	want = `
# HELP prometheus_tsdb_head_series Total number of series in the head block.
# TYPE prometheus_tsdb_head_series gauge
prometheus_tsdb_head_series{tenant="t1"} 1
prometheus_tsdb_head_series{tenant="t2"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "prometheus_tsdb_head_series"); err != nil {
		t.Fatal(err)
	}
}

// TestOrderWithinOneRequest covers what the TSDB would drop silently at commit: samples
// out of order within one request, and a series repeated within one request.
func TestOrderWithinOneRequest(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	a := []string{"__name__", "a"}
	resp, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		// Unordered within the series: accepted, stored in order.
		series(a, prompb.Sample{Timestamp: base + 2000, Value: 3}, prompb.Sample{Timestamp: base, Value: 1}, prompb.Sample{Timestamp: base + 1000, Value: 2}),
		// The same series again: older and conflicting samples are rejected, an identical
		// resend and newer samples are fine.
		series(a,
			prompb.Sample{Timestamp: base + 500, Value: 9},  // out of order w.r.t. the first entry
			prompb.Sample{Timestamp: base + 2000, Value: 3}, // identical resend
			prompb.Sample{Timestamp: base + 3000, Value: 4},
		),
		series(a, prompb.Sample{Timestamp: base + 3000, Value: 5}), // same timestamp, other value
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 5 || resp.RejectedCount() != 2 {
		t.Fatalf("unexpected response %s", resp)
	}
	reasons := map[string]int64{}
	for _, r := range resp.Rejections {
		reasons[r.Reason] += r.Count
	}
	if reasons[client.ReasonOutOfOrder] != 1 || reasons[client.ReasonDuplicateSample] != 1 {
		t.Fatalf("rejections %v", reasons)
	}
	got := querySeries(t, c, "t1", base, base+3000)
	if len(got) != 1 || len(got[0].samples) != 4 {
		t.Fatalf("stored %+v", got)
	}
	for i, s := range got[0].samples {
		if s.t != base+int64(i)*1000 || s.v != float64(i+1) {
			t.Fatalf("sample %d = %+v", i, s)
		}
	}
}

type changingLimits struct {
	ooo atomic.Int64
}

func (l *changingLimits) MaxSeriesPerTenant(string) int { return 0 }
func (l *changingLimits) MaxSeriesPerMetric(string) int { return 0 }
func (l *changingLimits) OutOfOrderTimeWindow(string) time.Duration {
	return time.Duration(l.ooo.Load())
}

func TestOutOfOrderWindowChangesAtRuntime(t *testing.T) {
	limits := &changingLimits{}
	ing := startIngester(t, testConfig(t), limits, nil)
	base := time.Now().UnixMilli()
	a := []string{"__name__", "a"}
	push := func(ts int64) *client.PushResponse {
		resp, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series(a, prompb.Sample{Timestamp: ts, Value: 1})}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	push(base)
	if r := push(base - 60_000); len(r.Rejections) != 1 || r.Rejections[0].Reason != client.ReasonOutOfOrder {
		t.Fatalf("with no window: %s", r)
	}
	limits.ooo.Store(int64(time.Hour))
	// The compaction loop applies changed limits; run one iteration now.
	if err := ing.compactAll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if r := push(base - 60_000); r.SamplesWritten != 1 || len(r.Rejections) != 0 {
		t.Fatalf("with a 1h window: %s", r)
	}
	// Exemplar storage survived the reconfiguration.
	ts := series(a, prompb.Sample{Timestamp: base + 1000, Value: 2})
	ts.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "abc"}}, Value: 2, Timestamp: base + 1000}}
	r, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{ts}})
	if err != nil {
		t.Fatal(err)
	}
	if r.ExemplarsWritten != 1 {
		t.Fatalf("exemplar after reconfiguration: %s", r)
	}
}

func TestFlushOnShutdown(t *testing.T) {
	bkt := objstore.NewInMemBucket()
	cfg := testConfig(t)
	cfg.FlushOnShutdown = true
	ing, err := New(cfg, nil, bkt, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "a"}, prompb.Sample{Timestamp: time.Now().UnixMilli(), Value: 1}),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	shipped := false
	for name := range bkt.Objects() {
		shipped = shipped || strings.HasPrefix(name, "t1/") && strings.HasSuffix(name, "/meta.json")
	}
	if !shipped {
		t.Fatalf("nothing shipped on shutdown: %v", bkt.Objects())
	}
}

// TestOutOfOrderSamplesQueryInOrder: with out-of-order data the head holds overlapping
// in-order and out-of-order chunks; Series must still stream non-overlapping chunks
// whose samples come out in time order.
func TestOutOfOrderSamplesQueryInOrder(t *testing.T) {
	ing := startIngester(t, testConfig(t), fixedLimits{ooo: time.Hour}, nil)
	c := serveGRPC(t, ing)
	base := time.Now().UnixMilli()
	a := []string{"__name__", "a"}
	for _, ts := range []int64{base, base + 2000, base + 1000, base + 3000, base + 500} {
		resp, err := c.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series(a, prompb.Sample{Timestamp: ts, Value: float64(ts - base)})}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.SamplesWritten != 1 {
			t.Fatalf("push %d: %s", ts, resp)
		}
	}
	got := querySeries(t, c, "t1", base, base+3000)
	if len(got) != 1 {
		t.Fatalf("want 1 series, got %d", len(got))
	}
	want := []int64{0, 500, 1000, 2000, 3000}
	if len(got[0].samples) != len(want) {
		t.Fatalf("samples %+v", got[0].samples)
	}
	for i, w := range want {
		if s := got[0].samples[i]; s.t != base+w || s.v != float64(w) {
			t.Fatalf("sample %d = %+v, want t=base+%d", i, s, w)
		}
	}
}

func TestNoTSDBOpensAfterStop(t *testing.T) {
	ing, err := New(testConfig(t), nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.getOrCreateTSDB("late"); !errors.Is(err, errStopping) {
		t.Fatalf("opening a tenant after stop: %v", err)
	}
	if _, err := ing.Push(ctxFor("late"), &prompb.WriteRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("push after stop: %v", err)
	}
}

func TestQueryEdgeCases(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)

	// Empty ingester: Info advertises an empty range, queries answer nothing.
	info, err := ing.Info(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Store.MinTime <= info.Store.MaxTime {
		t.Fatalf("empty ingester advertises %d-%d", info.Store.MinTime, info.Store.MaxTime)
	}
	if got := querySeries(t, c, "nobody", 0, 1); len(got) != 0 {
		t.Fatalf("series from an empty ingester: %v", got)
	}
	if _, err := c.LabelValues(ctxFor("t1"), &storepb.LabelValuesRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("label values without a label name: %v", err)
	}
	if _, err := c.Exemplars(ctxFor("t1"), &exemplarspb.ExemplarsRequest{Query: "rate("}); err != nil {
		t.Fatal(err) // streams report errors on Recv
	}

	base := time.Now().UnixMilli()
	for _, tn := range []string{"t1", "t2"} {
		if _, err := ing.Push(ctxFor(tn), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"__name__", "a", "x", "1"}, prompb.Sample{Timestamp: base, Value: 1}),
			series([]string{"__name__", "b", "y", "1"}, prompb.Sample{Timestamp: base + 10, Value: 1}),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	// Without a tenant Info covers every tenant.
	info, err = ing.Info(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Store.MinTime != base || info.Store.MaxTime != base+10 {
		t.Fatalf("info range %d-%d", info.Store.MinTime, info.Store.MaxTime)
	}
	// Label names honour matchers and the limit.
	ln, err := c.LabelNames(ctxFor("t1"), &storepb.LabelNamesRequest{Start: base, End: base + 10,
		Matchers: []storepb.LabelMatcher{eqMatcher("__name__", "a")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ln.Names) != 2 || ln.Names[1] != "x" {
		t.Fatalf("label names with matcher: %v", ln.Names)
	}
	ln, err = c.LabelNames(ctxFor("t1"), &storepb.LabelNamesRequest{Start: base, End: base + 10, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(ln.Names) != 1 {
		t.Fatalf("label names with limit 1: %v", ln.Names)
	}
	// Series limit.
	stream, err := c.Series(ctxFor("t1"), &storepb.SeriesRequest{MinTime: base, MaxTime: base + 10, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSeries() != nil {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("series limit 1 returned %d series", n)
	}
}

func TestExemplarsWithoutAcceptedSamples(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	base := time.Now().UnixMilli()
	withExemplar := func(name string, ts int64, samples ...prompb.Sample) prompb.TimeSeries {
		s := series([]string{"__name__", name}, samples...)
		s.Exemplars = []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: strconv.FormatInt(ts, 10)}}, Value: 1, Timestamp: ts}}
		return s
	}
	if _, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		withExemplar("a", base, prompb.Sample{Timestamp: base, Value: 1}),
	}}); err != nil {
		t.Fatal(err)
	}
	resp, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		// Sample rejected as out of order, but the series exists: the exemplar is kept.
		withExemplar("a", base+1, prompb.Sample{Timestamp: base - 1000, Value: 1}),
		// No sample and no such series: the exemplar cannot be stored, and says so.
		withExemplar("unknown", base),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExemplarsWritten != 1 || resp.RejectedCount() != 2 {
		t.Fatalf("unexpected response %s", resp)
	}
	found := false
	for _, r := range resp.Rejections {
		found = found || (r.Reason == client.ReasonInvalidExemplar && r.Series == `{__name__="unknown"}` && strings.Contains(r.Message, "no sample of its series"))
	}
	if !found {
		t.Fatalf("missing invalid_exemplar rejection: %s", resp)
	}
}

// TestStalledQueryReleasedByCancel: head truncation waits for open head readers
// (Prometheus behaviour), so a querier that stops reading a Series stream holds up a
// forced flush until its context ends; cancelling it must release the flush.
func TestStalledQueryReleasedByCancel(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	base := time.Now().Add(-time.Hour).UnixMilli()
	req := &prompb.WriteRequest{}
	for s := 0; s < 5000; s++ {
		req.Timeseries = append(req.Timeseries, series([]string{"__name__", "m", "s", strconv.Itoa(s), "pad", strings.Repeat("x", 64)},
			prompb.Sample{Timestamp: base, Value: 1}))
	}
	if _, err := ing.Push(ctxFor("t1"), req); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxFor("t1"))
	defer cancel()
	// Far more than the HTTP/2 flow-control window: the server blocks in Send while
	// this test does not read.
	stream, err := c.Series(ctx, &storepb.SeriesRequest{MinTime: base, MaxTime: base})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ing.FlushAll(context.Background()) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("flush still blocked after the stalled query was cancelled")
	}
	if got := querySeries(t, c, "t1", base, base); len(got) != 5000 {
		t.Fatalf("after flush %d series, want 5000", len(got))
	}
}

func TestGRPCHealth(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	c := serveGRPC(t, ing)
	// dskit's client pool health-checks with this dummy tenant.
	resp, err := c.Check(ctxFor("0"), &grpc_health_v1.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("health %s", resp.Status)
	}
	// A server that already has a health service keeps it (no duplicate-registration panic).
	srv := grpc.NewServer()
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	ing.RegisterGRPC(srv)
	srv.Stop()
}
