package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jaegermodel "github.com/jaegertracing/jaeger-idl/model/v1"
	api_v2 "github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	"github.com/openzipkin/zipkin-go"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	zipkinhttp "github.com/openzipkin/zipkin-go/reporter/http"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// sendThreeServiceTrace records frontend → checkout → payments with the OpenTelemetry SDK
// and exports it with exp; it returns the trace ID.
func sendThreeServiceTrace(t *testing.T, newExp func() (sdktrace.SpanExporter, error), suffix string, failPayment bool) trace.TraceID {
	t.Helper()
	ctx := context.Background()
	var traceID trace.TraceID
	var parent context.Context = ctx
	for i, svc := range []string{"frontend" + suffix, "checkout" + suffix, "payments" + suffix} {
		exp, err := newExp()
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(sdkresource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(svc))))
		tr := tp.Tracer("e2e")
		// Each hop: a client span in the caller and a server span in the callee, as
		// instrumented HTTP clients and servers record them.
		var span trace.Span
		if i == 0 {
			parent, span = tr.Start(parent, "GET /checkout", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("http.route", "/checkout"), attribute.Int("http.response.status_code", 200)))
		} else {
			parent, span = tr.Start(parent, "POST /"+svc, trace.WithSpanKind(trace.SpanKindServer))
		}
		traceID = span.SpanContext().TraceID()
		if i < 2 {
			var client trace.Span
			parent, client = tr.Start(parent, "call next", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attribute.Bool("retry", false), attribute.Float64("weight", 0.5)))
			client.AddEvent("sent", trace.WithAttributes(attribute.Int("bytes", 512)))
			defer func(tp *sdktrace.TracerProvider, client trace.Span) {
				client.End()
				_ = tp.Shutdown(ctx)
			}(tp, client)
		}
		if i == 2 && failPayment {
			span.SetStatus(codes.Error, "card declined")
		}
		defer func(tp *sdktrace.TracerProvider, span trace.Span) {
			span.End()
			_ = tp.ForceFlush(ctx)
		}(tp, span)
	}
	return traceID
}

// jaegerTrace fetches a trace through the Jaeger v1 API Grafana's Jaeger datasource uses.
func jaegerTrace(in *instance, traceID string) (map[string]any, int, error) {
	resp, err := http.Get(in.URL("/jaeger/api/traces/" + traceID))
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, resp.StatusCode, err
	}
	return body, resp.StatusCode, nil
}

func spanCount(jaegerBody map[string]any) int {
	data, _ := jaegerBody["data"].([]any)
	if len(data) != 1 {
		return 0
	}
	spans, _ := data[0].(map[string]any)["spans"].([]any)
	return len(spans)
}

// TestTracesFromEveryClientReadByEveryAPI: OTLP (gRPC and HTTP), Zipkin and Jaeger clients
// write; Jaeger, Zipkin and Tempo query APIs read the same traces; span metrics and the
// service graph are queryable with PromQL.
func TestTracesFromEveryClientReadByEveryAPI(t *testing.T) {
	in := startVigil(t, t.TempDir(), "-traces.derived-metrics.flush-interval=1s")
	ctx := context.Background()

	grpcTrace := sendThreeServiceTrace(t, func() (sdktrace.SpanExporter, error) {
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.OTLPGRPC)), otlptracegrpc.WithInsecure())
	}, "", true)
	httpTrace := sendThreeServiceTrace(t, func() (sdktrace.SpanExporter, error) {
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.OTLPHTTP)), otlptracehttp.WithInsecure())
	}, "-h", false)
	mainPortTrace := sendThreeServiceTrace(t, func() (sdktrace.SpanExporter, error) {
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.HTTPPort)), otlptracehttp.WithURLPath("/otlp/v1/traces"), otlptracehttp.WithInsecure())
	}, "-m", false)

	// Zipkin: zipkin-go's HTTP reporter against :9411.
	rep := zipkinhttp.NewReporter(fmt.Sprintf("http://127.0.0.1:%d/api/v2/spans", in.Zipkin))
	ep, _ := zipkin.NewEndpoint("zipkin-svc", "127.0.0.1:8080")
	zt, err := zipkin.NewTracer(rep, zipkin.WithLocalEndpoint(ep))
	if err != nil {
		t.Fatal(err)
	}
	zspan := zt.StartSpan("zipkin-op", zipkin.Kind(zipkinmodel.Server), zipkin.Tags(map[string]string{"env": "e2e"}))
	zspan.Finish()
	zipkinTrace := zspan.Context().TraceID.String()
	if err := rep.Close(); err != nil {
		t.Fatal(err)
	}

	// Jaeger: the api_v2 collector gRPC client against :14250.
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", in.Jaeger), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	jTraceID := jaegermodel.TraceID{High: 0x1122334455667788, Low: 0x99aabbccddeeff00}
	_, err = api_v2.NewCollectorServiceClient(conn).PostSpans(ctx, &api_v2.PostSpansRequest{Batch: jaegermodel.Batch{
		Process: &jaegermodel.Process{ServiceName: "jaeger-svc"},
		Spans: []*jaegermodel.Span{{
			TraceID: jTraceID, SpanID: jaegermodel.SpanID(0x42), OperationName: "jaeger-op",
			StartTime: time.Now().Add(-time.Second), Duration: 150 * time.Millisecond,
			Tags: []jaegermodel.KeyValue{jaegermodel.String("span.kind", "server"), jaegermodel.Int64("answer", 42)},
		}},
	}})
	if err != nil {
		t.Fatalf("jaeger PostSpans: %v", err)
	}

	for name, want := range map[string]struct {
		id    string
		spans int
	}{
		"otlp-grpc": {grpcTrace.String(), 5}, "otlp-http": {httpTrace.String(), 5}, "otlp-main-port": {mainPortTrace.String(), 5},
		"zipkin": {zipkinTrace, 1}, "jaeger": {fmt.Sprintf("%016x%016x", jTraceID.High, jTraceID.Low), 1},
	} {
		testutil.Eventually(t, 30*time.Second, func() error {
			body, code, err := jaegerTrace(in, want.id)
			if err != nil {
				return err
			}
			if code != http.StatusOK || spanCount(body) != want.spans {
				return fmt.Errorf("%s: GET /jaeger/api/traces/%s = %d with %d spans, want %d", name, want.id, code, spanCount(body), want.spans)
			}
			return nil
		})
		for _, path := range []string{"/zipkin/api/v2/trace/" + want.id, "/tempo/api/traces/" + want.id, "/jaeger/api/v3/traces/" + want.id} {
			resp, err := http.Get(in.URL(path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), want.id[len(want.id)-16:]) {
				t.Errorf("%s: GET %s = %d: %.200s", name, path, resp.StatusCode, body)
			}
		}
	}

	// Missing trace: Jaeger's 404 envelope.
	body, code, _ := jaegerTrace(in, "0123456789abcdef0123456789abcdef")
	if code != http.StatusNotFound || !strings.Contains(fmt.Sprint(body["errors"]), "trace not found") {
		t.Errorf("missing trace: %d %v", code, body)
	}

	// Service picker and search (what Grafana's Jaeger datasource calls).
	resp, err := http.Get(in.URL("/jaeger/api/services"))
	if err != nil {
		t.Fatal(err)
	}
	var services struct{ Data []string }
	_ = json.NewDecoder(resp.Body).Decode(&services)
	resp.Body.Close()
	for _, s := range []string{"frontend", "checkout", "payments", "zipkin-svc", "jaeger-svc"} {
		if !containsAll(services.Data, s) {
			t.Errorf("services %v lack %s", services.Data, s)
		}
	}
	q := url.Values{"service": {"payments"}, "tags": {`{"error":"true"}`}, "limit": {"20"}}
	resp, err = http.Get(in.URL("/jaeger/api/traces?" + q.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	var search struct {
		Data []struct{ TraceID string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&search)
	resp.Body.Close()
	if len(search.Data) != 1 || search.Data[0].TraceID != grpcTrace.String() {
		t.Errorf("search service=payments error=true: %+v, want only %s", search.Data, grpcTrace)
	}

	// Grafana's Tempo search builder: errors of one service.
	resp, err = http.Get(in.URL("/tempo/api/search?q=" + url.QueryEscape(`{ resource.service.name = "payments" && status = error }`)))
	if err != nil {
		t.Fatal(err)
	}
	var tempoSearch struct {
		Traces []struct{ TraceID string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&tempoSearch)
	resp.Body.Close()
	if len(tempoSearch.Traces) != 1 || !strings.HasSuffix(grpcTrace.String(), strings.TrimLeft(tempoSearch.Traces[0].TraceID, "0")) {
		t.Errorf("tempo search status=error: %+v, want only %s", tempoSearch.Traces, grpcTrace)
	}

	// Derived metrics through PromQL: the node graph Grafana draws.
	api := queryAPI(t, in, "/prometheus", "")
	testutil.Eventually(t, 60*time.Second, func() error {
		v, _, err := api.Query(ctx, `sum by (client, server) (traces_service_graph_request_total{client=~"frontend|checkout"})`, time.Now())
		if err != nil {
			return err
		}
		edges := map[string]float64{}
		for _, s := range v.(model.Vector) {
			edges[string(s.Metric["client"])+"->"+string(s.Metric["server"])] = float64(s.Value)
		}
		if edges["frontend->checkout"] != 1 || edges["checkout->payments"] != 1 || len(edges) != 2 {
			return fmt.Errorf("service graph edges = %v", edges)
		}
		v, _, err = api.Query(ctx, `sum(traces_spanmetrics_calls_total{service="payments",status_code="STATUS_CODE_ERROR"})`, time.Now())
		if err != nil {
			return err
		}
		if vec := v.(model.Vector); len(vec) != 1 || vec[0].Value != 1 {
			return fmt.Errorf("span metrics error calls for payments = %v", vec)
		}
		return nil
	})
}
