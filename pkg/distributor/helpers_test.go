package distributor

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/ring"
	ringclient "github.com/grafana/dskit/ring/client"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// fakeIngester records pushes. The real ingester is tested in its own
// package; here only the distributor's side of the contract matters.
type fakeIngester struct {
	grpc_health_v1.HealthClient // nil: only Check is called

	addr string

	mu     sync.Mutex
	pushes []*prompb.WriteRequest
	tenant []string
	// fail makes Push return this error.
	fail error
	// discard makes the ingester a no-op sink (benchmarks).
	discard bool
	// reject lets a test have the ingester refuse series (e.g. series limits).
	reject func(ts prompb.TimeSeries) *ingclient.Rejection
	// block, when set, holds every push until it is closed (a slow replica).
	block chan struct{}
}

func (f *fakeIngester) Check(context.Context, *grpc_health_v1.HealthCheckRequest, ...grpc.CallOption) (*grpc_health_v1.HealthCheckResponse, error) {
	return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
}

func (f *fakeIngester) Close() error { return nil }

func (f *fakeIngester) Push(ctx context.Context, req *prompb.WriteRequest, _ ...grpc.CallOption) (*ingclient.PushResponse, error) {
	tenantID, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, fmt.Errorf("fake ingester: %w", err)
	}
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	resp := &ingclient.PushResponse{MetadataWritten: int64(len(req.Metadata))}
	for _, ts := range req.Timeseries {
		if f.reject != nil {
			if rej := f.reject(ts); rej != nil {
				resp.Rejections = append(resp.Rejections, *rej)
				continue
			}
		}
		resp.SamplesWritten += int64(len(ts.Samples))
		resp.HistogramsWritten += int64(len(ts.Histograms))
		resp.ExemplarsWritten += int64(len(ts.Exemplars))
	}
	if !f.discard {
		// Like a real ingester, keep only copies: the request's memory is
		// reused once every push of it returned.
		f.pushes = append(f.pushes, cloneWriteRequest(req))
		f.tenant = append(f.tenant, tenantID)
	}
	return resp, nil
}

// series returns every series this ingester received, keyed by its labels.
func (f *fakeIngester) series() map[string]prompb.TimeSeries {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]prompb.TimeSeries{}
	var b labels.ScratchBuilder
	for _, p := range f.pushes {
		for _, ts := range p.Timeseries {
			key := ts.ToLabels(&b, nil).String()
			prev := out[key]
			prev.Labels = ts.Labels
			prev.Samples = append(prev.Samples, ts.Samples...)
			prev.Histograms = append(prev.Histograms, ts.Histograms...)
			prev.Exemplars = append(prev.Exemplars, ts.Exemplars...)
			out[key] = prev
		}
	}
	return out
}

func (f *fakeIngester) metadata() []prompb.MetricMetadata {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []prompb.MetricMetadata
	for _, p := range f.pushes {
		out = append(out, p.Metadata...)
	}
	return out
}

type envOptions struct {
	ingesters   int
	rf          int
	multiTenant bool
	limits      func(*validation.Limits)
	// addrs and factory replace the fake ingesters with real endpoints.
	addrs   []string
	factory ringclient.PoolFactory
}

type testEnv struct {
	d         *Distributor
	ingesters []*fakeIngester
	reg       *prometheus.Registry
	srv       *httptest.Server
}

func defaultTestLimits(t testing.TB) validation.Limits {
	t.Helper()
	var l validation.Limits
	fs := flag.NewFlagSet("limits", flag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return l
}

func defaultTestConfig(t testing.TB) Config {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("distributor", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newTestEnv starts a distributor over an in-memory ring of fake ingesters
// and serves its HTTP handlers on a loopback port.
func newTestEnv(t testing.TB, o envOptions) *testEnv {
	t.Helper()
	if o.ingesters == 0 {
		o.ingesters = 1
	}
	if o.rf == 0 {
		o.rf = 1
	}
	logger := slog.New(slog.DiscardHandler)
	kvClient, closer := consul.NewInMemoryClient(ring.GetCodec(), logutil.GoKit(logger), nil)
	t.Cleanup(func() { _ = closer.Close() })

	env := &testEnv{reg: prometheus.NewPedanticRegistry()}
	desc := ring.NewDesc()
	tokens := ring.NewRandomTokenGeneratorWithSeed(42)
	var taken []uint32
	byAddr := map[string]*fakeIngester{}
	if len(o.addrs) > 0 {
		o.ingesters = len(o.addrs)
	}
	for i := 0; i < o.ingesters; i++ {
		addr := fmt.Sprintf("ingester-%d:9095", i)
		if len(o.addrs) > 0 {
			addr = o.addrs[i]
		}
		tk := tokens.GenerateTokens(128, taken)
		taken = append(taken, tk...)
		desc.AddIngester(fmt.Sprintf("ingester-%d", i), addr, "", tk, ring.ACTIVE, time.Now(), false, time.Time{}, nil)
		fi := &fakeIngester{addr: addr}
		env.ingesters = append(env.ingesters, fi)
		byAddr[addr] = fi
	}
	if err := kvClient.CAS(context.Background(), RingKey, func(interface{}) (interface{}, bool, error) {
		return desc, true, nil
	}); err != nil {
		t.Fatal(err)
	}

	var factory ringclient.PoolFactory = ringclient.PoolAddrFunc(func(addr string) (ringclient.PoolClient, error) {
		fi, ok := byAddr[addr]
		if !ok {
			return nil, fmt.Errorf("no fake ingester at %s", addr)
		}
		return fi, nil
	})
	if o.factory != nil {
		factory = o.factory
	}

	limits := defaultTestLimits(t)
	if o.limits != nil {
		o.limits(&limits)
	}
	overrides, err := validation.NewOverrides(limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultTestConfig(t)
	cfg.ReplicationFactor = o.rf
	cfg.MultiTenancyEnabled = o.multiTenant

	d, err := New(cfg, overrides, kvClient, factory, env.reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), d) })
	env.d = d

	router := mux.NewRouter()
	d.RegisterHTTP(router)
	router.PathPrefix("/v1/metrics").Handler(d.OTLPMetricsHandler())
	env.srv = httptest.NewServer(router) // binds 127.0.0.1:0
	t.Cleanup(env.srv.Close)
	return env
}

// allSeries merges what every fake ingester received.
func (e *testEnv) allSeries() map[string]prompb.TimeSeries {
	out := map[string]prompb.TimeSeries{}
	for _, fi := range e.ingesters {
		for k, v := range fi.series() {
			out[k] = v
		}
	}
	return out
}

func (e *testEnv) allMetadata() []prompb.MetricMetadata {
	var out []prompb.MetricMetadata
	for _, fi := range e.ingesters {
		out = append(out, fi.metadata()...)
	}
	return out
}

func (e *testEnv) discarded(tenant, reason string) float64 {
	return testutil.ToFloat64(e.d.metrics.discardedSamples.WithLabelValues(tenant, reason))
}

func (e *testEnv) received(tenant string) float64 {
	return testutil.ToFloat64(e.d.metrics.receivedSamples.WithLabelValues(tenant))
}

// post sends a raw request and returns status, body and headers.
func (e *testEnv) post(t testing.TB, path string, headers map[string]string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func mustContain(t testing.TB, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

// series builds a prompb series from name/value pairs.
func series(lbls ...string) []prompb.Label {
	out := make([]prompb.Label, 0, len(lbls)/2)
	for i := 0; i+1 < len(lbls); i += 2 {
		out = append(out, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
	}
	return out
}

func userCtx(tenantID string) context.Context {
	return user.InjectOrgID(context.Background(), tenantID)
}

// cloneWriteRequest deep-copies req (gogo's Unmarshal copies strings).
func cloneWriteRequest(req *prompb.WriteRequest) *prompb.WriteRequest {
	b, err := req.Marshal()
	if err != nil {
		panic(err)
	}
	out := &prompb.WriteRequest{}
	if err := out.Unmarshal(b); err != nil {
		panic(err)
	}
	return out
}
