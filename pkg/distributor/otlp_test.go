package distributor

import (
	"bytes"
	"compress/gzip"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelmetric "go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// sampleOTLPMetrics builds OTLP metrics of every kind the translator handles.
func sampleOTLPMetrics(now time.Time) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	attrs := rm.Resource().Attributes()
	attrs.PutStr("service.name", "checkout")
	attrs.PutStr("service.namespace", "shop")
	attrs.PutStr("service.instance.id", "inst-1")
	attrs.PutStr("host.name", "node-7")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName("github.com/acme/checkout")
	ts := pcommon.NewTimestampFromTime(now)
	start := pcommon.NewTimestampFromTime(now.Add(-time.Minute))

	g := sm.Metrics().AppendEmpty()
	g.SetName("memory.usage")
	g.SetUnit("By")
	g.SetDescription("Memory in use.")
	gp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	gp.SetTimestamp(ts)
	gp.SetIntValue(1024)
	gp.Attributes().PutStr("memory.type", "heap")

	s := sm.Metrics().AppendEmpty()
	s.SetName("http.server.requests")
	s.SetUnit("{request}")
	sum := s.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	sp := sum.DataPoints().AppendEmpty()
	sp.SetStartTimestamp(start)
	sp.SetTimestamp(ts)
	sp.SetDoubleValue(42)
	sp.Attributes().PutStr("http.route", "/pay")

	h := sm.Metrics().AppendEmpty()
	h.SetName("http.server.request.duration")
	h.SetUnit("s")
	hist := h.SetEmptyHistogram()
	hist.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	hp := hist.DataPoints().AppendEmpty()
	hp.SetStartTimestamp(start)
	hp.SetTimestamp(ts)
	hp.SetCount(3)
	hp.SetSum(0.6)
	hp.ExplicitBounds().FromRaw([]float64{0.1, 0.5})
	hp.BucketCounts().FromRaw([]uint64{1, 1, 1})
	ex := hp.Exemplars().AppendEmpty()
	ex.SetTimestamp(ts)
	ex.SetDoubleValue(0.3)
	ex.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	ex.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})

	e := sm.Metrics().AppendEmpty()
	e.SetName("rpc.duration")
	e.SetUnit("ms")
	eh := e.SetEmptyExponentialHistogram()
	eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	ep := eh.DataPoints().AppendEmpty()
	ep.SetStartTimestamp(start)
	ep.SetTimestamp(ts)
	ep.SetScale(2)
	ep.SetCount(4)
	ep.SetSum(10)
	ep.SetZeroCount(1)
	ep.Positive().SetOffset(1)
	ep.Positive().BucketCounts().FromRaw([]uint64{1, 2})

	su := sm.Metrics().AppendEmpty()
	su.SetName("gc.pause")
	su.SetUnit("s")
	sup := su.SetEmptySummary().DataPoints().AppendEmpty()
	sup.SetTimestamp(ts)
	sup.SetCount(2)
	sup.SetSum(0.02)
	q := sup.QuantileValues().AppendEmpty()
	q.SetQuantile(0.5)
	q.SetValue(0.01)
	return md
}

// capturingAppendable records what Prometheus' own OTLP receiver appends.
type capturingAppendable struct {
	mu   sync.Mutex
	reqs []*prompb.WriteRequest
}

type capturingAppender struct {
	*writeRequestAppender
	parent *capturingAppendable
}

func (c *capturingAppendable) AppenderV2(context.Context) storage.AppenderV2 {
	return &capturingAppender{writeRequestAppender: newWriteRequestAppender(), parent: c}
}

func (a *capturingAppender) Commit() error {
	a.parent.mu.Lock()
	defer a.parent.mu.Unlock()
	a.parent.reqs = append(a.parent.reqs, a.req)
	return nil
}

func seriesNames(reqs ...*prompb.WriteRequest) []string {
	var out []string
	for _, r := range reqs {
		for _, ts := range r.Timeseries {
			out = append(out, labelsString(ts.Labels))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func otlpProto(t testing.TB, md pmetric.Metrics) []byte {
	t.Helper()
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOTLPSeriesMatchPrometheusReceiver sends the same OTLP request to
// Prometheus' own OTLP receiver (default settings) and to Vigil: the series
// (names and labels) must be identical.
func TestOTLPSeriesMatchPrometheusReceiver(t *testing.T) {
	env := newTestEnv(t, envOptions{})
	md := sampleOTLPMetrics(time.Now())

	capture := &capturingAppendable{}
	promHandler := remote.NewOTLPWriteHandler(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), capture,
		func() config.Config { c := config.DefaultConfig; c.OTLPConfig = config.DefaultOTLPConfig; return c },
		remote.OTLPOptions{LookbackDelta: 5 * time.Minute})
	promSrv := httptest.NewServer(promHandler)
	defer promSrv.Close()
	resp, err := http.Post(promSrv.URL, "application/x-protobuf", bytes.NewReader(otlpProto(t, md)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("prometheus receiver status %d", resp.StatusCode)
	}

	code, body, _ := env.post(t, "/otlp/v1/metrics", map[string]string{"Content-Type": "application/x-protobuf"}, bytes.NewReader(otlpProto(t, md)))
	if code != http.StatusOK {
		t.Fatalf("vigil status %d: %s", code, body)
	}

	capture.mu.Lock()
	want := seriesNames(capture.reqs...)
	capture.mu.Unlock()
	var got []string
	for k := range env.allSeries() {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("series differ from Prometheus' OTLP receiver:\nvigil: %v\nprom:  %v", got, want)
	}
	// Spot-check the names users query by.
	for _, name := range []string{
		`{__name__="memory_usage_bytes", instance="inst-1", job="shop/checkout", memory_type="heap"}`,
		`{__name__="http_server_requests_total", http_route="/pay", instance="inst-1", job="shop/checkout"}`,
		`{__name__="http_server_request_duration_seconds_bucket", instance="inst-1", job="shop/checkout", le="0.5"}`,
		`{__name__="rpc_duration_milliseconds", instance="inst-1", job="shop/checkout"}`,
		`{__name__="target_info", host_name="node-7", instance="inst-1", job="shop/checkout"}`,
	} {
		if !slices.Contains(got, name) {
			t.Errorf("missing series %s", name)
		}
	}
	all := env.allSeries()
	if nh := all[`{__name__="rpc_duration_milliseconds", instance="inst-1", job="shop/checkout"}`]; len(nh.Histograms) != 1 {
		t.Errorf("exponential histogram not a native histogram: %+v", nh)
	}
	var exemplars int
	for k, ts := range all {
		if strings.Contains(k, "http_server_request_duration_seconds_bucket") {
			for _, e := range ts.Exemplars {
				if labelsString(e.Labels) == `{span_id="0102030405060708", trace_id="0102030405060708090a0b0c0d0e0f10"}` {
					exemplars++
				}
			}
		}
	}
	if exemplars != 1 {
		t.Errorf("histogram exemplar with trace_id not carried (found %d)", exemplars)
	}
	families := map[string]prompb.MetricMetadata{}
	for _, m := range env.allMetadata() {
		families[m.MetricFamilyName] = m
	}
	if m := families["memory_usage_bytes"]; m.Type != prompb.MetricMetadata_GAUGE || m.Help != "Memory in use." || m.Unit != "bytes" {
		t.Errorf("gauge metadata = %+v (all %v)", m, families)
	}
	if m := families["http_server_request_duration_seconds"]; m.Type != prompb.MetricMetadata_HISTOGRAM {
		t.Errorf("histogram metadata = %+v", m)
	}
}

func TestOTLPPartialTranslation(t *testing.T) {
	env := newTestEnv(t, envOptions{})
	md := sampleOTLPMetrics(time.Now())
	// Delta sums are refused by Prometheus' default settings; the rest of
	// the request must still be written.
	d := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
	d.SetName("jobs.processed")
	ds := d.SetEmptySum()
	ds.SetIsMonotonic(true)
	ds.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	dp := ds.DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	dp.SetIntValue(3)

	code, body, _ := env.post(t, "/otlp/v1/metrics", map[string]string{"Content-Type": "application/json"}, bytes.NewReader(mustJSON(t, md)))
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", code, body)
	}
	var st spb.Status
	if err := protojson.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("error body is not a JSON google.rpc.Status: %v (%s)", err, body)
	}
	mustContain(t, st.Message, ReasonOTLPTranslation, "jobs.processed", "temporality")
	if _, ok := env.allSeries()[`{__name__="memory_usage_bytes", instance="inst-1", job="shop/checkout", memory_type="heap"}`]; !ok {
		t.Errorf("accepted part of the request was dropped")
	}
	if got := env.discarded("anonymous", ReasonOTLPTranslation); got != 1 {
		t.Errorf("discarded otlp_translation_failed = %v, want 1", got)
	}
}

func TestOTLPNativeDeltaIngestion(t *testing.T) {
	env := newTestEnv(t, envOptions{})
	env.d.cfg.OTLP.NativeDeltaIngestion = true
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "worker")
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("jobs.processed")
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	dp := sum.DataPoints().AppendEmpty()
	dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	dp.SetIntValue(3)

	code, body, _ := env.post(t, "/otlp/v1/metrics", map[string]string{"Content-Type": "application/x-protobuf"}, bytes.NewReader(otlpProto(t, md)))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	ts, ok := env.allSeries()[`{__name__="jobs_processed_total", job="worker"}`]
	if !ok || len(ts.Samples) != 1 || ts.Samples[0].Value != 3 {
		t.Fatalf("delta sample not stored as is: %v", keys(env.allSeries()))
	}
}

func mustJSON(t testing.TB, md pmetric.Metrics) []byte {
	t.Helper()
	b, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestOTLPHTTPEncodingsAndErrors(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) { l.MaxRecvMsgSize = 4096 }})
	md := sampleOTLPMetrics(time.Now())

	// JSON + gzip on the OTLP port's path, with charset parameter.
	code, body, hdr := env.post(t, "/v1/metrics", map[string]string{"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"}, bytes.NewReader(gz(t, mustJSON(t, md))))
	if code != http.StatusOK {
		t.Fatalf("json+gzip: %d %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("response content type %q, want application/json", ct)
	}
	if n := len(env.allSeries()); n == 0 {
		t.Fatal("nothing written")
	}

	for _, tc := range []struct {
		name     string
		headers  map[string]string
		body     []byte
		code     int
		contains string
	}{
		{"unsupported content type", map[string]string{"Content-Type": "text/plain"}, []byte("x"), http.StatusUnsupportedMediaType, "application/x-protobuf"},
		{"malformed protobuf", map[string]string{"Content-Type": "application/x-protobuf"}, []byte{0xff, 0xff, 0xff}, http.StatusBadRequest, "decode OTLP metrics export request"},
		{"malformed json", map[string]string{"Content-Type": "application/json"}, []byte(`{"resourceMetrics": [`), http.StatusBadRequest, "decode OTLP metrics export request"},
		{"bad gzip", map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, []byte("not gzip"), http.StatusBadRequest, "gzip"},
		{"unsupported encoding", map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, []byte("x"), http.StatusUnsupportedMediaType, "br"},
		{"too large", map[string]string{"Content-Type": "application/x-protobuf"}, bytes.Repeat([]byte{1}, 5000), http.StatusRequestEntityTooLarge, "-distributor.max-recv-msg-size"},
		{"too large after gzip", map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, gz(t, bytes.Repeat([]byte{0}, 100000)), http.StatusRequestEntityTooLarge, "after gzip decompression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := env.post(t, "/otlp/v1/metrics", tc.headers, bytes.NewReader(tc.body))
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if code == http.StatusUnsupportedMediaType && tc.headers["Content-Encoding"] == "" {
				mustContain(t, body, tc.contains)
				return
			}
			var st spb.Status
			unmarshal := proto.Unmarshal
			if tc.headers["Content-Type"] == "application/json" {
				unmarshal = func(b []byte, m proto.Message) error { return protojson.Unmarshal(b, m) }
			}
			if err := unmarshal([]byte(body), &st); err != nil {
				t.Fatalf("error body is not a google.rpc.Status: %v", err)
			}
			mustContain(t, st.Message, tc.contains)
		})
	}
}

// recordWithSDK records a few instruments the way an instrumented
// service does, exporting through exp.
func recordWithSDK(t *testing.T, exp sdkmetric.Exporter) {
	t.Helper()
	ctx := context.Background()
	res := resource.NewSchemaless(
		attribute.String("service.name", "cart"),
		attribute.String("service.instance.id", "cart-0"),
	)
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(res),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: "rpc.duration"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}})),
	)
	defer func() { _ = mp.Shutdown(ctx) }()
	meter := mp.Meter("test")
	counter, err := meter.Int64Counter("orders.placed", otelmetric.WithUnit("{order}"))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := meter.Float64Histogram("http.server.request.duration", otelmetric.WithUnit("s"))
	if err != nil {
		t.Fatal(err)
	}
	exph, err := meter.Float64Histogram("rpc.duration", otelmetric.WithUnit("ms"))
	if err != nil {
		t.Fatal(err)
	}
	// A sampled span in the context makes the SDK keep an exemplar.
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		SpanID:     trace.SpanID{0xbb, 1, 2, 3, 4, 5, 6, 7},
		TraceFlags: trace.FlagsSampled,
	})
	spanCtx := trace.ContextWithSpanContext(ctx, sc)
	counter.Add(spanCtx, 3)
	hist.Record(spanCtx, 0.25)
	exph.Record(spanCtx, 12)
	if err := mp.ForceFlush(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}
}

func TestOTLPHTTPExporterSDK(t *testing.T) {
	for _, compression := range []otlpmetrichttp.Compression{otlpmetrichttp.NoCompression, otlpmetrichttp.GzipCompression} {
		env := newTestEnv(t, envOptions{multiTenant: true})
		exp, err := otlpmetrichttp.New(context.Background(),
			otlpmetrichttp.WithEndpointURL(env.srv.URL+"/otlp/v1/metrics"),
			otlpmetrichttp.WithCompression(compression),
			otlpmetrichttp.WithHeaders(map[string]string{"X-Scope-OrgID": "shop"}),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}),
		)
		if err != nil {
			t.Fatal(err)
		}
		recordWithSDK(t, exp)
		assertSDKSeries(t, env, "shop")
	}
}

func TestOTLPGRPCExporterSDK(t *testing.T) {
	env := newTestEnv(t, envOptions{multiTenant: true})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Vigil's gRPC servers force the ingester client codec; OTLP's
	// pdata messages must still decode through it.
	srv := grpc.NewServer(ingclient.ServerOptions()...)
	env.d.RegisterOTLPGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	exp, err := otlpmetricgrpc.New(context.Background(),
		otlpmetricgrpc.WithEndpoint(lis.Addr().String()),
		otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithHeaders(map[string]string{"X-Scope-OrgID": "grpc-team"}),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
	)
	if err != nil {
		t.Fatal(err)
	}
	recordWithSDK(t, exp)
	assertSDKSeries(t, env, "grpc-team")

	// Without a tenant the gRPC export fails with Unauthenticated.
	noTenant, err := otlpmetricgrpc.New(context.Background(),
		otlpmetricgrpc.WithEndpoint(lis.Addr().String()),
		otlpmetricgrpc.WithInsecure(),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
	)
	if err != nil {
		t.Fatal(err)
	}
	rm := &metricdata.ResourceMetrics{
		Resource: resource.Empty(),
		ScopeMetrics: []metricdata.ScopeMetrics{{
			Scope: instrumentation.Scope{Name: "test"},
			Metrics: []metricdata.Metrics{{
				Name: "g",
				Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{{Time: time.Now(), Value: 1}}},
			}},
		}},
	}
	err = noTenant.Export(context.Background(), rm)
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("export without tenant: %v, want Unauthenticated", err)
	}
	_ = noTenant.Shutdown(context.Background())
}

func assertSDKSeries(t *testing.T, env *testEnv, tenantID string) {
	t.Helper()
	all := env.allSeries()
	// Scope metadata is not promoted by default, as in Prometheus.
	for _, w := range []string{
		`{__name__="orders_placed_total", instance="cart-0", job="cart"}`,
		`{__name__="http_server_request_duration_seconds_count", instance="cart-0", job="cart"}`,
		`{__name__="rpc_duration_milliseconds", instance="cart-0", job="cart"}`,
	} {
		if _, ok := all[w]; !ok {
			t.Errorf("missing %s in %v", w, keys(all))
		}
	}
	var exemplar bool
	for k, ts := range all {
		if strings.HasPrefix(k, `{__name__="http_server_request_duration_seconds_bucket"`) {
			for _, e := range ts.Exemplars {
				for _, l := range e.Labels {
					if l.Name == "trace_id" && l.Value == "aa0102030405060708090a0b0c0d0e0f" {
						exemplar = true
					}
				}
			}
		}
	}
	if !exemplar {
		t.Error("SDK exemplar with trace_id not carried")
	}
	for _, fi := range env.ingesters {
		fi.mu.Lock()
		for _, tn := range fi.tenant {
			if tn != tenantID {
				t.Errorf("ingester got tenant %q, want %q", tn, tenantID)
			}
		}
		fi.mu.Unlock()
	}
}

func keys(m map[string]prompb.TimeSeries) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// A resource whose data points lie decades apart must not make the
// translator synthesize millions of target_info samples.
func TestOTLPTargetInfoSpanIsBounded(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) { l.CreationGracePeriod = 0 }})
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "old")
	rm.Resource().Attributes().PutStr("host.name", "h")
	g := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	g.SetName("g")
	dps := g.SetEmptyGauge().DataPoints()
	dps.AppendEmpty().SetTimestamp(pcommon.Timestamp(1))
	now := dps.AppendEmpty()
	now.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))

	code, body, _ := env.post(t, "/otlp/v1/metrics", map[string]string{"Content-Type": "application/x-protobuf"}, bytes.NewReader(otlpProto(t, md)))
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", code, body)
	}
	var st spb.Status
	if err := proto.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	mustContain(t, st.Message, "target_info", "too long a time range")
	ts := env.allSeries()[`{__name__="target_info", host_name="h", job="old"}`]
	if n := len(ts.Samples); n > maxTargetInfoSamples {
		t.Errorf("%d target_info samples written", n)
	}
	if _, ok := env.allSeries()[`{__name__="g", job="old"}`]; !ok {
		t.Errorf("gauge samples were dropped: %v", keys(env.allSeries()))
	}
}

func TestOTLPGRPCRateLimitCarriesRetryInfo(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) {
		l.IngestionRate = 0.001
		l.IngestionBurstSize = 1
	}})
	g := &otlpGRPC{d: env.d}
	req := pmetricotlp.NewExportRequestFromMetrics(sampleOTLPMetrics(time.Now()))
	_, err := g.Export(context.Background(), req)
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		t.Fatalf("want ResourceExhausted, got %v", err)
	}
	var info *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			info = ri
		}
	}
	if info == nil || info.RetryDelay.AsDuration() <= 0 {
		t.Fatalf("no RetryInfo in %v", st.Details())
	}
	mustContain(t, st.Message(), ReasonRateLimited)
}
