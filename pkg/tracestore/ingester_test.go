package tracestore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func testIngesterConfig(dir string) IngesterConfig {
	return IngesterConfig{
		DataDir:          dir,
		MaxBlockDuration: time.Hour,
		MaxBlockBytes:    1 << 30,
		CutCheckInterval: time.Hour, // tests cut explicitly
		RowGroupSpans:    64,
	}
}

func newTestBucket(t testing.TB) objstore.Bucket {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bkt
}

func startIngester(t testing.TB, cfg IngesterConfig, bkt objstore.Bucket, limits Limits) *TraceIngester {
	t.Helper()
	ing, err := NewTraceIngester(cfg, bkt, limits, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), ing) })
	return ing
}

// serveGRPC serves the ingester on 127.0.0.1:0 with the tenant interceptors
// the lead installs on the shared server, and returns a connected client conn.
func serveGRPC(t testing.TB, ing *TraceIngester) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(middleware.ServerUserHeaderInterceptor))
	ing.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return dialTest(t, lis.Addr().String())
}

func dialTest(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(middleware.ClientUserHeaderInterceptor))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func push(ctx context.Context, cc *grpc.ClientConn, td ptrace.Traces) error {
	_, err := ptraceotlp.NewGRPCClient(cc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
	return err
}

func TestIngesterPushAndQueryHeadOverGRPC(t *testing.T) {
	ing := startIngester(t, testIngesterConfig(t.TempDir()), newTestBucket(t), nil)
	cc := serveGRPC(t, ing)
	td := genTraces(genOpts{traces: 5, spansPerTrace: 6, attrsPerSpan: 10, seed: 1})
	if err := push(tenantCtx("t1"), cc, td); err != nil {
		t.Fatal(err)
	}
	r := NewQueryClient(cc)
	ctx := tenantCtx("t1")
	id := testTraceID(1, 2)
	got, found, err := r.TraceByID(ctx, id, time.Time{}, time.Time{})
	if err != nil || !found {
		t.Fatalf("TraceByID: found=%v err=%v", found, err)
	}
	if got.SpanCount() != 6 {
		t.Fatalf("got %d spans, want 6", got.SpanCount())
	}
	if want := spanIDs(t, filterTrace(td, id)); len(spanIDs(t, got)) != len(want) {
		t.Fatalf("span IDs differ")
	}
	svcs, err := r.Services(ctx, time.Time{}, time.Time{})
	if err != nil || strings.Join(svcs, ",") != "cart,checkout,frontend" {
		t.Fatalf("services = %v, %v", svcs, err)
	}
	ops, err := r.Operations(ctx, "frontend", SpanKindServer, time.Time{}, time.Time{})
	if err != nil || len(ops) == 0 {
		t.Fatalf("operations = %v, %v", ops, err)
	}
	for _, op := range ops {
		if op.SpanKind != SpanKindServer {
			t.Fatalf("operation %v has wrong kind", op)
		}
	}
	res, err := r.Search(ctx, SearchRequest{Attributes: map[string]string{"region": "us-east-1"}, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 { // traces 1 and 3 of 0..4
		t.Fatalf("search by attribute alone returned %d traces, want 2", len(res))
	}
	if !res[0].Start.After(res[1].Start) {
		t.Fatalf("search not newest first: %v", res)
	}
	deps, err := r.Dependencies(ctx, time.Time{}, time.Time{})
	if err != nil || len(deps) == 0 {
		t.Fatalf("dependencies = %v, %v", deps, err)
	}
	vals, err := r.AttributeValues(ctx, "http.method", time.Time{}, time.Time{})
	if err != nil || strings.Join(vals, ",") != "GET,POST" {
		t.Fatalf("attribute values = %v, %v", vals, err)
	}
	if _, err := r.Search(ctx, SearchRequest{MinDuration: 2 * time.Second, MaxDuration: time.Second}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("contradictory search: err = %v, want ErrInvalidRequest", err)
	}

	// Tenant isolation: another tenant sees nothing.
	other := tenantCtx("t2")
	if _, found, err := r.TraceByID(other, id, time.Time{}, time.Time{}); err != nil || found {
		t.Fatalf("tenant t2 sees t1's trace: found=%v err=%v", found, err)
	}
	if svcs, err := r.Services(other, time.Time{}, time.Time{}); err != nil || len(svcs) != 0 {
		t.Fatalf("tenant t2 services = %v, %v", svcs, err)
	}
	// No tenant: rejected by the server (a conn without the tenant interceptor).
	raw, err := grpc.NewClient(cc.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := push(context.Background(), raw, td); err == nil {
		t.Fatal("push without tenant succeeded")
	}
	if _, err := ing.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(td)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Export without tenant: %v", err)
	}
	if _, err := ing.Export(tenantCtx("../evil"), ptraceotlp.NewExportRequestFromTraces(td)); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Export with a path-like tenant: %v", err)
	}
}

func TestIngesterLimitsRejectWithReason(t *testing.T) {
	ing := startIngester(t, testIngesterConfig(t.TempDir()), newTestBucket(t), StaticLimits(5, 0))
	cc := serveGRPC(t, ing)
	ctx := tenantCtx("t1")
	// Trace 0 with 6 spans exceeds 5; pushed together with a 4-span trace.
	big := genTraces(genOpts{traces: 1, spansPerTrace: 6, seed: 7})
	small := genTraces(genOpts{traces: 1, spansPerTrace: 4, seed: 8})
	small.ResourceSpans().MoveAndAppendTo(big.ResourceSpans())
	err := push(ctx, cc, big)
	reason, n, ok := RejectionReason(err)
	if !ok || reason != ReasonMaxSpansPerTrace || n != 6 {
		t.Fatalf("RejectionReason(%v) = %q, %d, %v", err, reason, n, ok)
	}
	if !strings.Contains(status.Convert(err).Message(), ReasonMaxSpansPerTrace) {
		t.Fatalf("message %q does not name the reason", status.Convert(err).Message())
	}
	r := NewQueryClient(cc)
	if _, found, _ := r.TraceByID(ctx, testTraceID(8, 0), time.Time{}, time.Time{}); !found {
		t.Fatal("the trace within limits was not stored")
	}
	if _, found, _ := r.TraceByID(ctx, testTraceID(7, 0), time.Time{}, time.Time{}); found {
		t.Fatal("the trace over the limit was stored")
	}

	ing2 := startIngester(t, testIngesterConfig(t.TempDir()), newTestBucket(t), StaticLimits(0, 500))
	cc2 := serveGRPC(t, ing2)
	err = push(ctx, cc2, genTraces(genOpts{traces: 1, spansPerTrace: 10, attrsPerSpan: 10, seed: 9}))
	if reason, _, ok := RejectionReason(err); !ok || reason != ReasonTraceTooLarge {
		t.Fatalf("byte limit: RejectionReason(%v) = %q, %v", err, reason, ok)
	}
}

func TestIngesterReplaysWALOnRestart(t *testing.T) {
	dir := t.TempDir()
	bkt := newTestBucket(t)
	cfg := testIngesterConfig(dir)
	ing, err := NewTraceIngester(cfg, bkt, nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	td := genTraces(genOpts{traces: 3, spansPerTrace: 3, seed: 3})
	if _, err := ing.Export(tenantCtx("t1"), ptraceotlp.NewExportRequestFromTraces(td)); err != nil {
		t.Fatal(err)
	}
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	ing2 := startIngester(t, cfg, bkt, nil)
	got, found, err := ing2.TraceByID(tenantCtx("t1"), testTraceID(3, 1), time.Time{}, time.Time{})
	if err != nil || !found || got.SpanCount() != 3 {
		t.Fatalf("after restart: found=%v spans=%d err=%v", found, got.SpanCount(), err)
	}
}

// TestWALSurvivesKill9 runs an ingester in a child process (this test binary
// re-executed), pushes to it concurrently, kills it with SIGKILL while pushes
// are in flight, and checks every acknowledged span after replay.
func TestWALSurvivesKill9(t *testing.T) {
	if os.Getenv("VIGIL_TRACE_WAL_CHILD") != "" {
		t.Skip("child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWALKillChild$")
	cmd.Env = append(os.Environ(), "VIGIL_TRACE_WAL_CHILD="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	addr := ""
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("child did not report its address")
	}
	go func() { // keep draining so the child never blocks on stdout
		for sc.Scan() {
		}
	}()
	cc := dialTest(t, addr)
	ctx := tenantCtx("t1")

	var mu sync.Mutex
	acked := map[TraceID]int{} // trace -> spans acknowledged
	const workers = 4
	killAt := 40 // acknowledged batches before the kill
	var wg sync.WaitGroup
	ackCh := make(chan struct{}, 1000)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := 0; ; b++ {
				seed := int64(w*100000 + b)
				td := genTraces(genOpts{traces: 5, spansPerTrace: 4, attrsPerSpan: 5, seed: seed})
				if err := push(ctx, cc, td); err != nil {
					return // the child is gone
				}
				mu.Lock()
				for i := 0; i < 5; i++ {
					acked[testTraceID(seed, i)] = 4
				}
				mu.Unlock()
				ackCh <- struct{}{}
			}
		}(w)
	}
	for i := 0; i < killAt; i++ {
		<-ackCh
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	_ = cmd.Wait()

	ing := startIngester(t, testIngesterConfig(dir), newTestBucket(t), nil)
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < killAt*5 {
		t.Fatalf("only %d traces acknowledged", len(acked))
	}
	for id, n := range acked {
		got, found, err := ing.TraceByID(ctx, id, time.Time{}, time.Time{})
		if err != nil || !found || got.SpanCount() != n {
			t.Fatalf("acknowledged trace %s: found=%v spans=%d want %d err=%v", id, found, got.SpanCount(), n, err)
		}
	}
}

// TestWALKillChild is the child side of TestWALSurvivesKill9.
func TestWALKillChild(t *testing.T) {
	dir := os.Getenv("VIGIL_TRACE_WAL_CHILD")
	if dir == "" {
		t.Skip("only runs as the child of TestWALSurvivesKill9")
	}
	// Everything lives under the parent's temp dir: a killed child cannot clean up.
	bkt, err := filesystem.NewBucket(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	ing := startIngester(t, testIngesterConfig(dir), bkt, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(middleware.ServerUserHeaderInterceptor))
	ing.RegisterGRPC(srv)
	fmt.Printf("ADDR %s\n", lis.Addr())
	_ = srv.Serve(lis) // until killed
}

func TestWALTornTailIsDropped(t *testing.T) {
	dir := t.TempDir()
	w, _, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := w.Append([]byte(fmt.Sprintf("record-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash mid-write: append half a record.
	f, err := os.OpenFile(segmentName(dir, 1), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := encodeWALRecord(nil, []byte("never acknowledged"))
	if _, err := f.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var got []string
	dropped, err := replaySegment(segmentName(dir, 1), func(p []byte) error {
		got = append(got, string(p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "record-0,record-1,record-2" || dropped != len(rec)/2 {
		t.Fatalf("replayed %v, dropped %d", got, dropped)
	}
	// A reopened WAL starts a fresh segment instead of appending after the torn tail.
	w2, segs, err := openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if len(segs) != 1 || w2.seq != 2 {
		t.Fatalf("segments %v, new segment %d", segs, w2.seq)
	}
	if _, err := os.Stat(filepath.Join(dir, "00000002")); err != nil {
		t.Fatal(err)
	}
}

func FuzzWALRecordDecode(f *testing.F) {
	f.Add(encodeWALRecord(nil, []byte("hello")))
	f.Add(encodeWALRecord(encodeWALRecord(nil, []byte("a")), []byte{}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, buf []byte) {
		r := bytes.NewReader(buf)
		off := 0
		for off < len(buf) {
			p, err := readWALRecord(r, int64(len(buf)-off))
			if err != nil {
				if !errors.Is(err, errTornRecord) {
					t.Fatalf("unexpected error type: %v", err)
				}
				return
			}
			n := walHeaderSize + len(p)
			if off+n > len(buf) {
				t.Fatalf("record of %d bytes at %d overruns %d", n, off, len(buf))
			}
			// Re-encoding a decoded record gives the same bytes.
			if !bytes.Equal(encodeWALRecord(nil, p), buf[off:off+n]) {
				t.Fatal("re-encoding differs")
			}
			off += n
		}
	})
}
func countBlocks(t *testing.T, bkt objstore.Bucket, tenant string) int {
	t.Helper()
	return len(liveBlocks(t, bkt, tenant))
}

func TestBlockCutBySizeAndAge(t *testing.T) {
	bkt := newTestBucket(t)
	cfg := testIngesterConfig(t.TempDir())
	cfg.MaxBlockBytes = 10 << 10
	cfg.MaxBlockDuration = 30 * time.Minute
	ing, err := NewTraceIngester(cfg, bkt, nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	var clockMu sync.Mutex
	ing.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), ing) })
	ctx := tenantCtx("t1")

	// Size: a push over MaxBlockBytes wakes the cut loop, which uploads.
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 50, spansPerTrace: 5, attrsPerSpan: 10, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	// Poll with a deadline: the upload happens on the service goroutine.
	deadline := time.After(30 * time.Second)
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for countBlocks(t, bkt, "t1") == 0 {
		select {
		case <-deadline:
			t.Fatal("no block cut after exceeding max block bytes")
		case <-poll.C:
		}
	}

	// Age: a small head is not cut until it is MaxBlockDuration old.
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 1, seed: 2}))); err != nil {
		t.Fatal(err)
	}
	if err := ing.cutDue(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if n := countBlocks(t, bkt, "t1"); n != 1 {
		t.Fatalf("%d blocks before the head aged, want 1", n)
	}
	clockMu.Lock()
	clock = clock.Add(31 * time.Minute)
	clockMu.Unlock()
	if err := ing.cutDue(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if n := countBlocks(t, bkt, "t1"); n != 2 {
		t.Fatalf("%d blocks after the head aged, want 2", n)
	}
}

func TestFlushHTTPEndpoint(t *testing.T) {
	bkt := newTestBucket(t)
	ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	if _, err := ing.Export(tenantCtx("t1"), exportReq(genTraces(genOpts{traces: 2, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	r := mux.NewRouter()
	ing.RegisterHTTP(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/ingester/flush-traces", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := countBlocks(t, bkt, "t1"); n != 1 {
		t.Fatalf("%d blocks after flush, want 1", n)
	}
}

func TestAddrHeadSourceQueriesIngestersByAddress(t *testing.T) {
	bkt := newTestBucket(t)
	ing := startIngester(t, testIngesterConfig(t.TempDir()), bkt, nil)
	cc := serveGRPC(t, ing)
	if err := push(tenantCtx("t1"), cc, genTraces(genOpts{traces: 2, seed: 4})); err != nil {
		t.Fatal(err)
	}
	addrs := []string{cc.Target()}
	src := NewAddrHeadSource(func(context.Context) ([]string, error) { return addrs, nil })
	defer src.Close()
	q := testQuerier(t, bkt, src)
	if _, found, err := q.TraceByID(tenantCtx("t1"), testTraceID(4, 1), time.Time{}, time.Time{}); err != nil || !found {
		t.Fatalf("found=%v err=%v", found, err)
	}
	// A dead ingester next to a live one is tolerated; when all are dead the query fails.
	addrs = []string{cc.Target(), "127.0.0.1:1"}
	if _, found, err := q.TraceByID(tenantCtx("t1"), testTraceID(4, 1), time.Time{}, time.Time{}); err != nil || !found {
		t.Fatalf("with one dead ingester: found=%v err=%v", found, err)
	}
	addrs = []string{"127.0.0.1:1"}
	if _, err := q.Services(tenantCtx("t1"), time.Time{}, time.Time{}); err == nil {
		t.Fatal("query succeeded with every ingester down")
	}
}

// failingBucket fails uploads until healed.
type failingBucket struct {
	objstore.Bucket
	mu     sync.Mutex
	broken bool
}

func (f *failingBucket) Upload(ctx context.Context, name string, r io.Reader, opts ...objstore.ObjectUploadOption) error {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	if broken {
		return errors.New("injected upload failure")
	}
	return f.Bucket.Upload(ctx, name, r, opts...)
}

func TestFailedUploadKeepsWALAndBacksOff(t *testing.T) {
	base := newTestBucket(t)
	bkt := &failingBucket{Bucket: base, broken: true}
	cfg := testIngesterConfig(t.TempDir())
	cfg.MaxBlockBytes = 4 << 10
	ing := startIngester(t, cfg, bkt, nil)
	ctx := tenantCtx("t1")
	var pushErr error
	accepted := 0
	for i := 0; i < 20 && pushErr == nil; i++ {
		_, pushErr = ing.Export(ctx, exportReq(genTraces(genOpts{traces: 5, spansPerTrace: 5, attrsPerSpan: 10, seed: int64(i)})))
		if pushErr == nil {
			accepted++
			if err := ing.FlushAll(context.Background()); err == nil {
				t.Fatal("flush succeeded with a broken bucket")
			}
		}
	}
	if status.Code(pushErr) != codes.ResourceExhausted {
		t.Fatalf("push with a growing upload backlog: %v, want ResourceExhausted", pushErr)
	}
	// Restart before the bucket heals: everything acknowledged comes back from the WAL.
	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	bkt.mu.Lock()
	bkt.broken = false
	bkt.mu.Unlock()
	ing2 := startIngester(t, cfg, bkt, nil)
	if _, found, _ := ing2.TraceByID(ctx, testTraceID(0, 3), time.Time{}, time.Time{}); !found {
		t.Fatal("acknowledged trace lost after failed uploads and restart")
	}
	if err := ing2.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := testQuerier(t, base, nil)
	for seed := 0; seed < accepted; seed++ {
		for tr := 0; tr < 5; tr++ {
			if _, found, err := q.TraceByID(ctx, testTraceID(int64(seed), tr), time.Time{}, time.Time{}); err != nil || !found {
				t.Fatalf("after healing, trace %d/%d: found=%v err=%v", seed, tr, found, err)
			}
		}
	}
}

// TestWALGroupCommit holds the sync lock while several appends buffer their
// records, then releases it: one fsync must cover all of them.
func TestWALGroupCommit(t *testing.T) {
	w, _, err := openWAL(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const n = 10
	w.syncMu.Lock()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) { errs <- w.Append([]byte(fmt.Sprintf("record %d", i))) }(i)
	}
	deadline := time.After(30 * time.Second)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for {
		w.mu.Lock()
		written := w.written
		w.mu.Unlock()
		if written == n {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("only %d appends buffered", written)
		case <-poll.C:
		}
	}
	w.syncMu.Unlock()
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	w.syncMu.Lock()
	syncs := w.syncs
	w.syncMu.Unlock()
	if syncs != 1 {
		t.Fatalf("%d fsyncs for %d concurrent appends, want 1", syncs, n)
	}
}

func TestIngesterMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	ing, err := NewTraceIngester(testIngesterConfig(t.TempDir()), newTestBucket(t), StaticLimits(2, 0), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ing.stopping(nil) }()
	ctx := tenantCtx("t1")
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 1, spansPerTrace: 2, seed: 1}))); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Export(ctx, exportReq(genTraces(genOpts{traces: 1, spansPerTrace: 3, seed: 2}))); err == nil {
		t.Fatal("trace over the span limit accepted")
	}
	if got := testutil.ToFloat64(ing.spansIn.WithLabelValues("t1")); got != 2 {
		t.Fatalf("received = %v, want 2", got)
	}
	if got := testutil.ToFloat64(ing.discarded.WithLabelValues("t1", ReasonMaxSpansPerTrace)); got != 3 {
		t.Fatalf("discarded = %v, want 3", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "vigil_ingester_trace_head_bytes" {
			if mf.GetMetric()[0].GetGauge().GetValue() <= 0 {
				t.Fatal("head bytes gauge is zero with spans in the head")
			}
			return
		}
	}
	t.Fatal("vigil_ingester_trace_head_bytes not registered")
}

func TestTenantFromGRPCMetadataWithoutInterceptor(t *testing.T) {
	ing := startIngester(t, testIngesterConfig(t.TempDir()), newTestBucket(t), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer() // no tenant interceptor installed
	ing.RegisterGRPC(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc := dialTest(t, lis.Addr().String())
	if err := push(tenantCtx("t9"), cc, genTraces(genOpts{traces: 1, seed: 1})); err != nil {
		t.Fatal(err)
	}
	if _, found, err := NewQueryClient(cc).TraceByID(tenantCtx("t9"), testTraceID(1, 0), time.Time{}, time.Time{}); err != nil || !found {
		t.Fatalf("found=%v err=%v", found, err)
	}
}

func TestHeadQueryReturnsTracesOverGRPCDefaultLimit(t *testing.T) {
	ing := startIngester(t, testIngesterConfig(t.TempDir()), newTestBucket(t), nil)
	cc := serveGRPC(t, ing)
	ctx := tenantCtx("t1")
	// One trace of ~6 MiB: 3000 spans with a 2 KiB attribute each.
	td := genTraces(genOpts{traces: 1, spansPerTrace: 3000, seed: 5})
	rss := td.ResourceSpans()
	big := strings.Repeat("x", 2048)
	for i := 0; i < rss.Len(); i++ {
		sp := rss.At(i).ScopeSpans().At(0).Spans()
		for j := 0; j < sp.Len(); j++ {
			sp.At(j).Attributes().PutStr("payload", big)
		}
	}
	if _, err := ing.Export(ctx, exportReq(td)); err != nil {
		t.Fatal(err)
	}
	got, found, err := NewQueryClient(cc).TraceByID(ctx, testTraceID(5, 0), time.Time{}, time.Time{})
	if err != nil || !found || got.SpanCount() != 3000 {
		t.Fatalf("found=%v spans=%d err=%v", found, got.SpanCount(), err)
	}
}
