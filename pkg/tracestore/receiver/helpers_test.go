package receiver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeIngester is a real gRPC server serving the OTLP TraceService, as the
// trace ingester does, recording what it receives per tenant.
type fakeIngester struct {
	ptraceotlp.UnimplementedGRPCServer
	addr string

	mtx    sync.Mutex
	spans  map[string]map[string]bool // tenant → traceID/spanID
	traces map[string][]ptrace.Traces
	fail   error
	// discard makes Export accept without recording (benchmarks).
	discard bool
}

func startIngester(t testing.TB) *fakeIngester {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor))
	ing := &fakeIngester{addr: lis.Addr().String(), spans: map[string]map[string]bool{}, traces: map[string][]ptrace.Traces{}}
	ptraceotlp.RegisterGRPCServer(s, ing)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return ing
}

func (f *fakeIngester) Export(ctx context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	tn, err := user.ExtractOrgID(ctx)
	if err != nil {
		return ptraceotlp.NewExportResponse(), status.Error(codes.Unauthenticated, "no tenant")
	}
	f.mtx.Lock()
	defer f.mtx.Unlock()
	if f.fail != nil {
		return ptraceotlp.NewExportResponse(), f.fail
	}
	if f.discard {
		return ptraceotlp.NewExportResponse(), nil
	}
	td := ptrace.NewTraces()
	req.Traces().CopyTo(td)
	f.traces[tn] = append(f.traces[tn], td)
	if f.spans[tn] == nil {
		f.spans[tn] = map[string]bool{}
	}
	forEachSpan(td, func(_ pcommon.Resource, s ptrace.Span) {
		f.spans[tn][s.TraceID().String()+"/"+s.SpanID().String()] = true
	})
	return ptraceotlp.NewExportResponse(), nil
}

func (f *fakeIngester) setFail(err error) {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	f.fail = err
}

func (f *fakeIngester) spanSet(tenant string) map[string]bool {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	out := map[string]bool{}
	for k := range f.spans[tenant] {
		out[k] = true
	}
	return out
}

func (f *fakeIngester) received(tenant string) ptrace.Traces {
	f.mtx.Lock()
	defer f.mtx.Unlock()
	out := ptrace.NewTraces()
	for _, td := range f.traces[tenant] {
		tmp := ptrace.NewTraces()
		td.CopyTo(tmp)
		tmp.ResourceSpans().MoveAndAppendTo(out.ResourceSpans())
	}
	return out
}

func forEachSpan(td ptrace.Traces, fn func(pcommon.Resource, ptrace.Span)) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			spans := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				fn(rs.Resource(), spans.At(k))
			}
		}
	}
}

// fakeRing assigns each key to rf consecutive instances starting at
// key mod n, so tests can predict where a trace goes.
type fakeRing struct {
	instances []ring.InstanceDesc
	rf        int
}

func newFakeRing(rf int, ings ...*fakeIngester) *fakeRing {
	r := &fakeRing{rf: rf}
	for i, ing := range ings {
		r.instances = append(r.instances, ring.InstanceDesc{Id: fmt.Sprintf("ingester-%d", i), Addr: ing.addr, State: ring.ACTIVE})
	}
	return r
}

func (r *fakeRing) Get(key uint32, _ ring.Operation, _ []ring.InstanceDesc, _, _ []string) (ring.ReplicationSet, error) {
	n := len(r.instances)
	set := ring.ReplicationSet{MaxErrors: r.rf - (r.rf/2 + 1)}
	for i := 0; i < r.rf; i++ {
		set.Instances = append(set.Instances, r.instances[(int(key)%n+i)%n])
	}
	return set, nil
}

func (r *fakeRing) ReplicationFactor() int { return r.rf }
func (r *fakeRing) InstancesCount() int    { return len(r.instances) }

// staticLimits are per-tenant limits for tests.
type staticLimits struct {
	rate      float64
	burst     int
	spanBytes int
	attrs     int
}

func (l staticLimits) IngestionRateSpans(string) float64  { return l.rate }
func (l staticLimits) IngestionBurstSizeSpans(string) int { return l.burst }
func (l staticLimits) MaxSpanBytes(string) int            { return l.spanBytes }
func (l staticLimits) MaxAttributesPerSpan(string) int    { return l.attrs }

// recordingGenerator records what the derived-metrics generator was fed.
type recordingGenerator struct {
	mtx   sync.Mutex
	spans map[string]int
}

func (g *recordingGenerator) ConsumeTraces(_ context.Context, tenant string, td ptrace.Traces) {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	if g.spans == nil {
		g.spans = map[string]int{}
	}
	g.spans[tenant] += td.SpanCount()
}

func (g *recordingGenerator) count(tenant string) int {
	g.mtx.Lock()
	defer g.mtx.Unlock()
	return g.spans[tenant]
}

type harness struct {
	r    *Receiver
	reg  *prometheus.Registry
	gen  *recordingGenerator
	ings []*fakeIngester
	http *httptest.Server
}

func newHarness(t testing.TB, multiTenant bool, limits Limits, rf, n int) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), gen: &recordingGenerator{}}
	for i := 0; i < n; i++ {
		h.ings = append(h.ings, startIngester(t))
	}
	cfg := Config{}
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	cfg.MultiTenancyEnabled = multiTenant
	r, err := New(cfg, limits, newFakeRing(rf, h.ings...), NewGRPCClientFactory(), h.gen, h.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.stopping(nil) })
	h.r = r
	router := mux.NewRouter()
	r.RegisterHTTP(router)
	router.Handle("/v1/traces", r.OTLPHTTPHandler())
	router.Handle("/api/v2/spans", r.ZipkinHandler())
	h.http = httptest.NewServer(router)
	t.Cleanup(h.http.Close)
	return h
}

func (h *harness) grpcServer(t testing.TB, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	h.r.RegisterOTLPGRPC(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func (h *harness) jaegerServer(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(JaegerServerOptions()...)
	h.r.RegisterJaegerGRPC(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// allSpans is the union of what every ingester received for tenant.
func (h *harness) allSpans(tenant string) map[string]bool {
	out := map[string]bool{}
	for _, ing := range h.ings {
		for k := range ing.spanSet(tenant) {
			out[k] = true
		}
	}
	return out
}

func do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Short aliases keep the client tests readable.
type (
	pcommonResource = pcommon.Resource
	ptraceSpan      = ptrace.Span
)

const (
	ptraceSpanKindServer = ptrace.SpanKindServer
	ptraceStatusError    = ptrace.StatusCodeError
)

func ringInstance(i int) ring.InstanceDesc {
	return ring.InstanceDesc{Id: fmt.Sprintf("ingester-%d", i), Addr: fmt.Sprintf("ingester-%d:9095", i), State: ring.ACTIVE}
}

func asPushError(err error, pe **PushError) bool { return errors.As(err, pe) }
