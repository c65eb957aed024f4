package receiver

import (
	"context"
	"strings"
	"testing"
	"time"

	model "github.com/jaegertracing/jaeger-idl/model/v1"
	"github.com/jaegertracing/jaeger-idl/proto-gen/api_v2"
	zipkin "github.com/openzipkin/zipkin-go"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	zipkinhttp "github.com/openzipkin/zipkin-go/reporter/http"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// emitTrace produces a small trace (server root, client child, internal
// grandchild) through the SDK with a synchronous exporter, so the spans
// have been exported when it returns. It returns the trace ID.
func emitTrace(t *testing.T, exp sdktrace.SpanExporter, service string) trace.TraceID {
	t.Helper()
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(service), attribute.String("host.name", "h1"))),
	)
	defer func() {
		if err := tp.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	tr := tp.Tracer("vigil-test")
	ctx, root := tr.Start(ctx, "GET /", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.Int("http.status_code", 200)))
	cctx, child := tr.Start(ctx, "query", trace.WithSpanKind(trace.SpanKindClient))
	_, gc := tr.Start(cctx, "parse")
	gc.AddEvent("parsed", trace.WithAttributes(attribute.Bool("ok", true)))
	gc.End()
	child.SetStatus(codes.Error, "db down")
	child.End()
	root.End()
	return root.SpanContext().TraceID()
}

func TestOTLPGRPCExporter(t *testing.T) {
	h := newHarness(t, true, staticLimits{}, 1, 3)
	addr := h.grpcServer(t)
	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithHeaders(map[string]string{"X-Scope-OrgID": "team-a"}),
		otlptracegrpc.WithCompressor("gzip"), // the Collector's default
		otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	tid := emitTrace(t, exp, "checkout")
	spans := h.allSpans("team-a")
	if len(spans) != 3 {
		t.Fatalf("ingesters got %d spans, want 3: %v", len(spans), spans)
	}
	// All spans of the trace sit on exactly one ingester (RF 1), the one
	// the token selects.
	holders := 0
	for i, ing := range h.ings {
		if n := len(ing.spanSet("team-a")); n > 0 {
			holders++
			if n != 3 {
				t.Errorf("ingester %d holds %d of 3 spans: trace split", i, n)
			}
		}
	}
	if holders != 1 {
		t.Errorf("trace on %d ingesters, want 1", holders)
	}
	var id [16]byte = tid
	want := int(TraceToken("team-a", id)) % 3
	if n := len(h.ings[want].spanSet("team-a")); n != 3 {
		t.Errorf("ingester %d (by token) holds %d spans", want, n)
	}
	if got := h.gen.count("team-a"); got != 3 {
		t.Errorf("generator saw %d spans, want 3", got)
	}
	if n := len(h.allSpans("anonymous")); n != 0 {
		t.Errorf("tenant leaked: anonymous has %d spans", n)
	}
}

func TestOTLPHTTPExporter(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		gzip       bool
	}{
		{"9009 path", "/otlp/v1/traces", false},
		{"4318 path gzip", "/v1/traces", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, staticLimits{}, 1, 1)
			opts := []otlptracehttp.Option{
				otlptracehttp.WithEndpointURL(h.http.URL + tc.path),
				otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
			}
			if tc.gzip {
				opts = append(opts, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
			}
			exp, err := otlptracehttp.New(context.Background(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			emitTrace(t, exp, "web")
			td := h.ings[0].received("anonymous")
			if td.SpanCount() != 3 {
				t.Fatalf("got %d spans, want 3", td.SpanCount())
			}
			svc, _ := td.ResourceSpans().At(0).Resource().Attributes().Get("service.name")
			if svc.Str() != "web" {
				t.Errorf("service.name %q", svc.Str())
			}
		})
	}
}

func TestZipkinReporter(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []zipkinhttp.ReporterOption
		path string
	}{
		{"json 9009", nil, "/zipkin/api/v2/spans"},
		{"proto3 9411", []zipkinhttp.ReporterOption{zipkinhttp.Serializer(zipkin_proto3.SpanSerializer{})}, "/api/v2/spans"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, staticLimits{}, 1, 1)
			rep := zipkinhttp.NewReporter(h.http.URL+tc.path, tc.opts...)
			ep, err := zipkin.NewEndpoint("zk-svc", "127.0.0.1:8080")
			if err != nil {
				t.Fatal(err)
			}
			tracer, err := zipkin.NewTracer(rep, zipkin.WithLocalEndpoint(ep))
			if err != nil {
				t.Fatal(err)
			}
			root := tracer.StartSpan("get /users", zipkin.Kind(zipkinmodel.Server))
			root.Tag("http.path", "/users")
			child := tracer.StartSpan("select", zipkin.Parent(root.Context()), zipkin.Kind(zipkinmodel.Client))
			child.Annotate(time.Now(), "wire.send")
			child.Finish()
			root.Finish()
			// Close flushes synchronously and fails the batch on non-2xx.
			if err := rep.Close(); err != nil {
				t.Fatal(err)
			}
			td := h.ings[0].received("anonymous")
			if td.SpanCount() != 2 {
				t.Fatalf("got %d spans, want 2", td.SpanCount())
			}
			svc, _ := td.ResourceSpans().At(0).Resource().Attributes().Get("service.name")
			if svc.Str() != "zk-svc" {
				t.Errorf("service.name %q", svc.Str())
			}
			parents := 0
			forEachSpan(td, func(_ pcommonResource, s ptraceSpan) {
				if !s.ParentSpanID().IsEmpty() {
					parents++
					if s.ParentSpanID().String() != root.Context().ID.String() {
						t.Errorf("parent %s want %s", s.ParentSpanID(), root.Context().ID)
					}
				}
			})
			if parents != 1 {
				t.Errorf("%d spans with parents, want 1", parents)
			}
		})
	}
}

func TestJaegerCollectorClient(t *testing.T) {
	h := newHarness(t, true, staticLimits{}, 1, 1)
	addr := h.jaegerServer(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(GogoCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := api_v2.NewCollectorServiceClient(conn)
	now := time.Now()
	tid := model.NewTraceID(0, 0xabc)
	batch := model.Batch{
		Process: model.NewProcess("jaeger-svc", []model.KeyValue{model.String("hostname", "h2")}),
		Spans: []*model.Span{
			{TraceID: tid, SpanID: 1, OperationName: "root", StartTime: now, Duration: time.Millisecond,
				Tags: []model.KeyValue{model.String("span.kind", "server"), model.Bool("error", true), model.Int64("n", 7)}},
			{TraceID: tid, SpanID: 2, OperationName: "child", StartTime: now, Duration: time.Microsecond,
				References: []model.SpanRef{model.NewChildOfRef(tid, 1)}},
		},
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "X-Scope-OrgID", "team-j")
	if _, err := client.PostSpans(ctx, &api_v2.PostSpansRequest{Batch: batch}); err != nil {
		t.Fatal(err)
	}
	td := h.ings[0].received("team-j")
	if td.SpanCount() != 2 {
		t.Fatalf("got %d spans", td.SpanCount())
	}
	forEachSpan(td, func(res pcommonResource, s ptraceSpan) {
		if v, _ := res.Attributes().Get("service.name"); v.Str() != "jaeger-svc" {
			t.Errorf("service %q", v.Str())
		}
		if s.Name() == "root" && (s.Kind() != ptraceSpanKindServer || s.Status().Code() != ptraceStatusError) {
			t.Errorf("root kind %v status %v", s.Kind(), s.Status().Code())
		}
		if s.Name() == "child" && s.ParentSpanID().String() != "0000000000000001" {
			t.Errorf("child parent %s", s.ParentSpanID())
		}
	})
	// Agents poll the sampling strategy on the same port.
	strat, err := api_v2.NewSamplingManagerClient(conn).GetSamplingStrategy(ctx, &api_v2.SamplingStrategyParameters{ServiceName: "jaeger-svc"})
	if err != nil || strat.GetProbabilisticSampling().GetSamplingRate() != defaultSamplingRate {
		t.Errorf("sampling strategy: %v %v", strat, err)
	}
	// Without a tenant the call is refused.
	_, err = client.PostSpans(context.Background(), &api_v2.PostSpansRequest{Batch: batch})
	if err == nil || !strings.Contains(err.Error(), "X-Scope-OrgID") {
		t.Fatalf("missing tenant: %v", err)
	}
}
