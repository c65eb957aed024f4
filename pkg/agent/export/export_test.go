package export

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// newServer starts an httptest server on 127.0.0.1:0.
func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return s
}

type rwReceiver struct {
	mu       sync.Mutex
	requests []prompb.WriteRequest
	tenants  []string
	// failFirst makes the first N requests answer 503.
	failFirst atomic.Int32
	status    int
}

func (r *rwReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.failFirst.Add(-1) >= 0 {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	if r.status != 0 {
		http.Error(w, "bad", r.status)
		return
	}
	body, _ := io.ReadAll(req.Body)
	raw, err := snappy.Decode(nil, body)
	if err != nil || req.Header.Get("Content-Encoding") != "snappy" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "bad encoding", http.StatusBadRequest)
		return
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests = append(r.requests, wr)
	r.tenants = append(r.tenants, req.Header.Get("X-Scope-OrgID"))
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *rwReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func series(n int) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, n)
	for i := range out {
		out[i] = prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: string(rune('a' + i%26))}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1000}},
		}
	}
	return out
}

func TestRemoteWriteBatchesRetriesAndTenant(t *testing.T) {
	rcv := &rwReceiver{}
	rcv.failFirst.Store(2)
	srv := newServer(t, rcv)
	reg := prometheus.NewPedanticRegistry()
	w, err := NewRemoteWriter(RemoteWriteConfig{URL: srv.URL, Tenant: "team-a", MaxSeriesPerRequest: 10,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetries: 5}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	if err := w.Enqueue(series(25)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 requests", func() bool { return rcv.count() == 3 })
	cancel()
	<-done
	total := 0
	for i, r := range rcv.requests {
		total += len(r.Timeseries)
		if rcv.tenants[i] != "team-a" {
			t.Fatalf("tenant header = %q", rcv.tenants[i])
		}
	}
	if total != 25 {
		t.Fatalf("received %d series, want 25", total)
	}
	if got := testutil.ToFloat64(w.requests.WithLabelValues("retry")); got != 2 {
		t.Fatalf("retries = %v, want 2", got)
	}
	if got := testutil.ToFloat64(w.series); got != 25 {
		t.Fatalf("series sent = %v", got)
	}
}

func TestRemoteWriteDropsRejectedAndBoundsQueue(t *testing.T) {
	rcv := &rwReceiver{status: http.StatusBadRequest}
	srv := newServer(t, rcv)
	w, err := NewRemoteWriter(RemoteWriteConfig{URL: srv.URL, MaxSeriesPerRequest: 1, QueueCapacity: 3}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Not running yet: the queue keeps only the newest 3 requests.
	if err := w.Enqueue(series(5)); err != nil {
		t.Fatal(err)
	}
	if w.QueueLen() != 3 || testutil.ToFloat64(w.dropped.WithLabelValues("queue_full")) != 2 {
		t.Fatalf("queue %d dropped %v", w.QueueLen(), testutil.ToFloat64(w.dropped.WithLabelValues("queue_full")))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	w.wake <- struct{}{}
	waitFor(t, "rejections", func() bool { return testutil.ToFloat64(w.dropped.WithLabelValues("rejected")) == 3 })
	if w.QueueLen() != 0 {
		t.Fatalf("queue not drained: %d", w.QueueLen())
	}
}

func TestFromGathererHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lat_seconds", Buckets: []float64{0.1, 1}}, []string{"route"})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total"})
	reg.MustRegister(h, c)
	h.WithLabelValues("/a").Observe(0.05)
	h.WithLabelValues("/a").Observe(0.5)
	c.Add(3)
	ts, err := FromGatherer(reg, time.UnixMilli(5000), func(name string, l []prompb.Label) []prompb.Label {
		return append(l, prompb.Label{Name: "host_name", Value: "h1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range ts {
		key := ""
		for _, l := range s.Labels {
			key += l.Name + "=" + l.Value + ","
		}
		got[key] = s.Samples[0].Value
		if s.Samples[0].Timestamp != 5000 {
			t.Fatalf("timestamp %d", s.Samples[0].Timestamp)
		}
	}
	want := map[string]float64{
		"__name__=c_total,host_name=h1,":                             3,
		"__name__=lat_seconds_bucket,host_name=h1,le=0.1,route=/a,":  1,
		"__name__=lat_seconds_bucket,host_name=h1,le=1,route=/a,":    2,
		"__name__=lat_seconds_bucket,host_name=h1,le=+Inf,route=/a,": 2,
		"__name__=lat_seconds_count,host_name=h1,route=/a,":          2,
		"__name__=lat_seconds_sum,host_name=h1,route=/a,":            0.55,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s = %v (present %v), want %v; all %v", k, g, ok, v, got)
		}
	}
}

func TestSpanExporter(t *testing.T) {
	var mu sync.Mutex
	var got []ptrace.Traces
	var paths, tenants []string
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, req.Traces())
		paths = append(paths, r.URL.Path)
		tenants = append(tenants, r.Header.Get("X-Scope-OrgID"))
		mu.Unlock()
	}))
	e, err := NewSpanExporter(OTLPConfig{Endpoint: srv.URL + "/otlp", Tenant: "t1", MaxBatch: 2}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1700000000, 0)
	for i := 0; i < 3; i++ {
		e.Add(&Span{ServiceName: "api", ServiceInstanceID: "h:1", HostName: "h", Name: "GET /users/{id}", Kind: SpanKindServer,
			Start: start, End: start.Add(time.Millisecond), Attributes: []Attr{StrAttr("http.request.method", "GET"), IntAttr("http.response.status_code", 200)}})
	}
	e.Add(&Span{ServiceName: "web", ServiceInstanceID: "h:2", Name: "SELECT", Kind: SpanKindClient, Start: start, End: start.Add(time.Second), Error: true})
	e.Flush(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2 (batch size 2)", len(got))
	}
	spans := 0
	for i, td := range got {
		spans += td.SpanCount()
		if paths[i] != "/otlp/v1/traces" || tenants[i] != "t1" {
			t.Fatalf("path %q tenant %q", paths[i], tenants[i])
		}
	}
	if spans != 4 {
		t.Fatalf("%d spans", spans)
	}
	sp := got[0].ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	svc, _ := got[0].ResourceSpans().At(0).Resource().Attributes().Get("service.name")
	code, _ := sp.Attributes().Get("http.response.status_code")
	if svc.Str() != "api" || sp.Kind() != ptrace.SpanKindServer || code.Int() != 200 || sp.EndTimestamp().AsTime().Sub(sp.StartTimestamp().AsTime()) != time.Millisecond {
		t.Fatalf("span = %v kind %v code %v", sp.Name(), sp.Kind(), code)
	}
}
