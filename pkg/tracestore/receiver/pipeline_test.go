package receiver

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/thanos-io/objstore"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/jaeger"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

// The write path against the real trace ingester (not a fake): spans go
// through the receiver into pkg/tracestore's head over gRPC, a per-trace
// limit there becomes an OTLP partial success with the limit named, and
// the stored trace reads back through the Jaeger API.
func TestPipelineWithRealIngester(t *testing.T) {
	var icfg tracestore.IngesterConfig
	icfg.RegisterFlags(flag.NewFlagSet("ingester", flag.PanicOnError))
	icfg.DataDir = t.TempDir()
	ing, err := tracestore.NewTraceIngester(icfg, objstore.NewInMemBucket(), tracestore.StaticLimits(2, 0), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), ing) })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor))
	ing.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	cfg.MultiTenancyEnabled = true
	rg := &fakeRing{rf: 1, instances: []ring.InstanceDesc{{Id: "ingester-0", Addr: lis.Addr().String(), State: ring.ACTIVE}}}
	gen := &recordingGenerator{}
	r, err := New(cfg, staticLimits{}, rg, NewGRPCClientFactory(), gen, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.stopping(nil) })
	router := mux.NewRouter()
	r.RegisterHTTP(router)
	jaeger.New(ing, true, slog.New(slog.NewTextHandler(io.Discard, nil))).RegisterHTTP(router, "/jaeger")
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)

	// Trace "big" has 3 spans (over the limit of 2), trace "ok" has 2.
	td := makeTraces(0, 0)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	big := pcommon.TraceID{0xb1, 0x6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	ok := pcommon.TraceID{0x0c, 0x0c, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	for i, id := range []pcommon.TraceID{big, big, big, ok, ok} {
		s := spans.AppendEmpty()
		s.SetTraceID(id)
		s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, byte(i + 1)})
		s.SetName("op")
		s.SetStartTimestamp(pcommon.Timestamp(1_795_316_400_000_000_000 + i))
		s.SetEndTimestamp(pcommon.Timestamp(1_795_316_400_001_000_000 + i))
	}
	code, body := post(t, hs.URL+"/otlp/v1/traces", ctProtobuf, otlpBody(t, td, false), map[string]string{"X-Scope-OrgID": "team-a"})
	if code != http.StatusOK {
		t.Fatalf("push: %d %q", code, body)
	}
	resp := ptraceotlp.NewExportResponse()
	if err := resp.UnmarshalProto([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if got := resp.PartialSuccess().RejectedSpans(); got != 3 {
		t.Errorf("rejected %d spans, want the 3 of the big trace", got)
	}
	if msg := resp.PartialSuccess().ErrorMessage(); !strings.Contains(msg, tracestore.ReasonMaxSpansPerTrace) || !strings.Contains(msg, flagMaxSpansPerTrace) {
		t.Errorf("partial success message %q does not name the limit", msg)
	}
	if got := testutil.ToFloat64(r.discardedSpans.WithLabelValues("team-a", tracestore.ReasonMaxSpansPerTrace)); got != 3 {
		t.Errorf("vigil_discarded_spans_total{reason=%q} = %v", tracestore.ReasonMaxSpansPerTrace, got)
	}

	get := func(path string) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodGet, hs.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Scope-OrgID", "team-a")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, v
	}
	code, v := get("/jaeger/api/traces/" + ok.String())
	if code != http.StatusOK {
		t.Fatalf("stored trace: %d %v", code, v)
	}
	data := v["data"].([]any)
	if n := len(data[0].(map[string]any)["spans"].([]any)); n != 2 {
		t.Errorf("stored trace has %d spans, want 2", n)
	}
	if code, _ := get("/jaeger/api/traces/" + big.String()); code != http.StatusNotFound {
		t.Errorf("refused trace: %d, want 404", code)
	}
	if code, v := get("/jaeger/api/services"); code != http.StatusOK || len(v["data"].([]any)) != 1 {
		t.Errorf("services: %d %v", code, v)
	}
}
