package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestOTLPMetricsFromSDK: an application instrumented with the OpenTelemetry Go SDK exports
// over OTLP gRPC (:4317), OTLP HTTP (:4318) and OTLP HTTP on the main port (/otlp), and its
// metrics are queryable with the names Prometheus' own OTLP receiver gives them.
func TestOTLPMetricsFromSDK(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx := context.Background()

	exporters := map[string]func() (sdkmetric.Exporter, error){
		"svc-grpc": func() (sdkmetric.Exporter, error) {
			return otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.OTLPGRPC)), otlpmetricgrpc.WithInsecure())
		},
		"svc-http": func() (sdkmetric.Exporter, error) {
			return otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.OTLPHTTP)), otlpmetrichttp.WithInsecure())
		},
		"svc-main-port": func() (sdkmetric.Exporter, error) {
			return otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(fmt.Sprintf("127.0.0.1:%d", in.HTTPPort)), otlpmetrichttp.WithURLPath("/otlp/v1/metrics"), otlpmetrichttp.WithInsecure())
		},
	}
	for svc, newExp := range exporters {
		exp, err := newExp()
		if err != nil {
			t.Fatal(err)
		}
		reader := sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))
		mp := sdkmetric.NewMeterProvider(
			sdkmetric.WithReader(reader),
			sdkmetric.WithResource(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(svc), semconv.ServiceInstanceID("i-1"), semconv.DeploymentEnvironment("prod"))),
		)
		m := mp.Meter("checkout")
		requests, err := m.Int64Counter("http.server.requests", metric.WithUnit("1"), metric.WithDescription("Requests handled."))
		if err != nil {
			t.Fatal(err)
		}
		latency, err := m.Float64Histogram("http.server.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(0.1, 0.5, 1))
		if err != nil {
			t.Fatal(err)
		}
		attrs := metric.WithAttributes(attribute.String("http.route", "/cart"))
		requests.Add(ctx, 7, attrs)
		for _, v := range []float64{0.05, 0.3, 0.7, 2} {
			latency.Record(ctx, v, attrs)
		}
		if err := mp.ForceFlush(ctx); err != nil {
			t.Fatalf("%s: export: %v", svc, err)
		}
		if err := mp.Shutdown(ctx); err != nil {
			t.Fatalf("%s: shutdown: %v", svc, err)
		}
	}

	api := queryAPI(t, in, "/prometheus", "")
	for svc := range exporters {
		checks := map[string]float64{
			fmt.Sprintf(`http_server_requests_total{job=%q,http_route="/cart"}`, svc): 7,
			fmt.Sprintf(`http_server_duration_seconds_count{job=%q}`, svc):            4,
			fmt.Sprintf(`http_server_duration_seconds_bucket{job=%q,le="0.5"}`, svc):  2,
			// Non-identifying resource attributes land on target_info, as in Prometheus.
			fmt.Sprintf(`count(target_info{job=%q,instance="i-1",deployment_environment="prod"})`, svc):            1,
			fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (http_server_duration_seconds_bucket{job=%q}))`, svc): 0.5,
		}
		for q, want := range checks {
			testutil.Eventually(t, 30*time.Second, func() error {
				v, _, err := api.Query(ctx, q, time.Now())
				if err != nil {
					return err
				}
				vec := v.(model.Vector)
				if len(vec) != 1 || float64(vec[0].Value) != want {
					return fmt.Errorf("%s = %v, want %v", q, vec, want)
				}
				return nil
			})
		}
	}
}
