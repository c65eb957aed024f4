package receiver

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"github.com/vigil-obs/vigil/pkg/tracestore/derived"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fuzzPost drives one body through a handler in-process and checks that
// the answer is a decision, never a crash or a 5xx.
func fuzzPost(t *testing.T, h http.Handler, ct string, body []byte, ok int) {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	switch rec.Code {
	case ok, http.StatusBadRequest:
	default:
		t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
	}
}

func FuzzZipkinJSON(f *testing.F) {
	for _, seed := range []string{
		`[]`,
		`[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7","name":"get","kind":"SERVER","timestamp":1700000000000000,"duration":1000,"localEndpoint":{"serviceName":"a","ipv4":"10.0.0.1","port":80},"tags":{"http.path":"/"},"annotations":[{"timestamp":1700000000000100,"value":"ws"}]}]`,
		`[{"traceId":"1","id":"2","parentId":"1","name":"x","debug":true,"shared":true,"remoteEndpoint":{"serviceName":"b","ipv6":"::1"}}]`,
		`[{"traceId":"zz"}]`,
		`{"not":"an array"}`,
		`[{"traceId":"1","id":"1","timestamp":-5,"duration":-1}]`,
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, false, staticLimits{attrs: 64, spanBytes: 1 << 16}, 1, 1)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzPost(t, h.r.ZipkinHandler(), ctJSON, body, http.StatusAccepted)
	})
}

func FuzzOTLPJSON(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"resourceSpans":[]}`,
		`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","parentSpanId":"00f067aa0ba902b8","name":"op","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000","attributes":[{"key":"i","value":{"intValue":"5"}},{"key":"d","value":{"doubleValue":1.5}},{"key":"b","value":{"boolValue":true}},{"key":"arr","value":{"arrayValue":{"values":[{"stringValue":"x"}]}}},{"key":"kv","value":{"kvlistValue":{"values":[{"key":"k","value":{"bytesValue":"AAE="}}]}}}],"events":[{"name":"e","timeUnixNano":"1700000000000500000"}],"links":[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4737","spanId":"00f067aa0ba902b9"}],"status":{"code":2,"message":"bad"}}]}]}]}`,
		`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":""}]}]}]}`,
		`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}`,
		`[`,
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, false, staticLimits{attrs: 64, spanBytes: 1 << 16}, 1, 1)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzPost(t, h.r.OTLPHTTPHandler(), ctJSON, body, http.StatusOK)
	})
}

// BenchmarkOTLPGRPCReceive measures the receive path end to end: an OTLP
// gRPC client exports batches of 100 realistic spans (10 attributes each)
// to the receiver, which validates, rate-limits, shards and pushes them to
// a fake ingester over loopback gRPC, and (in the second variant) feeds the
// real derived-metrics generator. Client, receiver and ingester share the
// process, so spans/s is for the whole loop on GOMAXPROCS cores.
func BenchmarkOTLPGRPCReceive(b *testing.B) {
	b.Run("no-derived-metrics", func(b *testing.B) { benchReceive(b, nil) })
	b.Run("with-derived-metrics", func(b *testing.B) {
		var cfg derived.Config
		cfg.RegisterFlags(flag.NewFlagSet("bench", flag.PanicOnError))
		gen, err := derived.New(cfg, derived.MetricsPusherFunc(func(context.Context, *prompb.WriteRequest) error { return nil }), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		benchReceive(b, gen)
	})
}

func benchReceive(b *testing.B, gen SpanConsumer) {
	h := newHarness(b, false, staticLimits{attrs: 128, spanBytes: 1 << 20}, 1, 1)
	if gen != nil {
		h.r.generator = gen
	}
	addr := h.grpcServer(b)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := ptraceotlp.NewGRPCClient(conn)
	const batch = 100
	td := makeTraces(batch, 10)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	for i := 0; i < spans.Len(); i++ {
		s := spans.At(i)
		s.SetName("GET /api/" + strings.Repeat("x", i%7))
		s.SetKind(ptrace.SpanKindServer)
		s.SetStartTimestamp(pcommon.Timestamp(1_700_000_000_000_000_000 + i*1000))
		s.SetEndTimestamp(pcommon.Timestamp(1_700_000_000_020_000_000 + i*1000))
	}
	req := ptraceotlp.NewExportRequestFromTraces(td)
	// The fake ingester keeps what it receives; drop it so the benchmark
	// measures the receiver, not a growing map.
	h.ings[0].discard = true
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := 0; i < b.N; i++ {
		if _, err := client.Export(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportThroughput(b, b.N*batch, cpuTime(b)-cpu0)
}

// cpuTime is the process's user+system CPU time. Spans per CPU-second is
// the figure the issue asks for (spans/s per core), and unlike wall-clock
// spans/s it does not depend on how busy the shared machine is.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportThroughput(b *testing.B, spans int, cpu time.Duration) {
	b.ReportMetric(float64(spans)/b.Elapsed().Seconds(), "spans/s")
	if cpu > 0 {
		b.ReportMetric(float64(spans)/cpu.Seconds(), "spans/cpu-s")
	}
}

type nopClient struct{}

func (nopClient) Export(context.Context, ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	return ptraceotlp.NewExportResponse(), nil
}
func (nopClient) Close() error { return nil }

// BenchmarkPush isolates the receiver's own work per request (validation,
// limits, sharding over a 3-ingester ring with RF 1, derived metrics) from
// gRPC encoding, with ingesters that accept without decoding.
func BenchmarkPush(b *testing.B) {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("bench", flag.PanicOnError))
	var dcfg derived.Config
	dcfg.RegisterFlags(flag.NewFlagSet("bench", flag.PanicOnError))
	gen, err := derived.New(dcfg, derived.MetricsPusherFunc(func(context.Context, *prompb.WriteRequest) error { return nil }), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ring := &fakeRing{rf: 1}
	for i := 0; i < 3; i++ {
		ring.instances = append(ring.instances, ringInstance(i))
	}
	r, err := New(cfg, staticLimits{rate: 1e12, burst: 1e9, attrs: 128, spanBytes: 1 << 20}, ring,
		func(string) (IngesterClient, error) { return nopClient{}, nil }, gen, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	const batch = 100
	template := makeTraces(batch, 10)
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		td := ptrace.NewTraces()
		template.CopyTo(td) // Push may drop spans from td
		c0 := cpuTime(b)
		b.StartTimer()
		if _, err := r.Push(context.Background(), "t", "bench", td); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime(b) - c0
		b.StartTimer()
	}
	b.StopTimer()
	reportThroughput(b, b.N*batch, cpu)
}
