package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// otlpTraceBody is one OTLP/HTTP protobuf request with a two-span trace for service svc.
func otlpTraceBody(t testing.TB, traceID [16]byte, svc string, start time.Time) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	ss := rs.ScopeSpans().AppendEmpty()
	root := ss.Spans().AppendEmpty()
	root.SetTraceID(traceID)
	root.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	root.SetName("GET /durable")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(20 * time.Millisecond)))
	root.Attributes().PutStr("http.route", "/durable")
	child := ss.Spans().AppendEmpty()
	child.SetTraceID(traceID)
	child.SetSpanID([8]byte{8, 7, 6, 5, 4, 3, 2, 1})
	child.SetParentSpanID(root.SpanID())
	child.SetName("SELECT")
	child.SetKind(ptrace.SpanKindClient)
	child.SetStartTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Millisecond)))
	child.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(10 * time.Millisecond)))
	body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func postOTLPTraces(ctx context.Context, in *instance, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.URL("/otlp/v1/traces"), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST /otlp/v1/traces: %s", resp.Status)
	}
	return nil
}

func traceIDN(i int) [16]byte {
	var id [16]byte
	id[0] = 0xd0
	id[12], id[13], id[14], id[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return id
}

func hexID(id [16]byte) string { return fmt.Sprintf("%x", id[:]) }

// TestKill9KeepsAcknowledgedSpans: every trace acknowledged with 2xx before SIGKILL is
// returned whole by the Jaeger API after a restart.
func TestKill9KeepsAcknowledgedSpans(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		acked []int
		done  = make(chan struct{})
	)
	start := time.Now().Add(-time.Minute)
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			if err := postOTLPTraces(ctx, in, otlpTraceBody(t, traceIDN(i), "durable-svc", start)); err != nil {
				return
			}
			mu.Lock()
			acked = append(acked, i)
			mu.Unlock()
		}
	}()
	testutil.Eventually(t, time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 100 {
			return fmt.Errorf("%d traces acknowledged so far", len(acked))
		}
		return nil
	})
	in.kill9()
	cancel()
	<-done
	in.restart()
	mu.Lock()
	defer mu.Unlock()
	for _, i := range acked {
		body, code, err := jaegerTrace(in, hexID(traceIDN(i)))
		if err != nil || code != http.StatusOK || spanCount(body) != 2 {
			t.Fatalf("acknowledged trace %d (%s) after kill -9: status %d, %d spans, err %v (%d acknowledged)", i, hexID(traceIDN(i)), code, spanCount(body), err, len(acked))
		}
	}
}

// TestTraceBlocksServedFromBucket: after a flush the traces live in the bucket at
// <tenant>/traces/<ULID>/ with meta.json; with the ingester's local state deleted, trace by
// ID and search still answer from the blocks. Runs on the filesystem bucket and on S3
// (MinIO).
func TestTraceBlocksServedFromBucket(t *testing.T) {
	t.Run("filesystem", func(t *testing.T) {
		dataDir := t.TempDir()
		testTraceBlocks(t, dataDir, func(ctx context.Context) ([]string, error) {
			return filepath.Glob(filepath.Join(dataDir, "bucket", "anonymous", "traces", "*", "meta.json"))
		})
	})
	t.Run("s3", func(t *testing.T) {
		m := testutil.StartMinIO(t)
		bkt := minioClient(t, m)
		testTraceBlocks(t, t.TempDir(), func(ctx context.Context) ([]string, error) {
			var metas []string
			err := bkt.Iter(ctx, "anonymous/traces/", func(dir string) error {
				if ok, err := bkt.Exists(ctx, dir+"meta.json"); err == nil && ok {
					metas = append(metas, dir+"meta.json")
				}
				return nil
			})
			return metas, err
		}, s3Flags(m)...)
	})
}

func testTraceBlocks(t *testing.T, dataDir string, listMetas func(context.Context) ([]string, error), extra ...string) {
	in := startVigil(t, dataDir, append([]string{"-traces.querier.block-sync-interval=1s"}, extra...)...)
	ctx := context.Background()
	start := time.Now().Add(-10 * time.Minute)
	for i := 0; i < 20; i++ {
		if err := postOTLPTraces(ctx, in, otlpTraceBody(t, traceIDN(1000+i), "blocky", start.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Post(in.URL("/ingester/flush-traces"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("flush: %s", resp.Status)
	}
	metas, err := listMetas(ctx)
	if err != nil || len(metas) == 0 {
		t.Fatalf("no trace block with meta.json in the bucket after flush: %v", err)
	}

	in.stop()
	if err := os.RemoveAll(filepath.Join(dataDir, "traces")); err != nil {
		t.Fatal(err)
	}
	in.restart()
	testutil.Eventually(t, time.Minute, func() error {
		for i := 0; i < 20; i++ {
			body, code, err := jaegerTrace(in, hexID(traceIDN(1000+i)))
			if err != nil || code != http.StatusOK || spanCount(body) != 2 {
				return fmt.Errorf("trace %d from the bucket: status %d, %d spans, err %v", i, code, spanCount(body), err)
			}
		}
		return nil
	})
	resp, err = http.Get(in.URL(fmt.Sprintf("/jaeger/api/traces?service=blocky&operation=%s&limit=100&start=%d&end=%d",
		"GET%20%2Fdurable", start.Add(-time.Minute).UnixMicro(), time.Now().UnixMicro())))
	if err != nil {
		t.Fatal(err)
	}
	var search struct {
		Data []struct{ TraceID string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&search)
	resp.Body.Close()
	if len(search.Data) != 20 {
		t.Fatalf("search from blocks found %d traces, want 20", len(search.Data))
	}
	// Newest first, deterministically.
	if !strings.HasSuffix(search.Data[0].TraceID, fmt.Sprintf("%08x", 1019)) {
		t.Fatalf("search order: first is %s, want the newest trace", search.Data[0].TraceID)
	}
}

// TestTraceTenantIsolation: with multi-tenancy on, a trace written as one tenant is invisible
// to another, and requests without a tenant are refused.
func TestTraceTenantIsolation(t *testing.T) {
	in := startVigil(t, t.TempDir(), "-auth.multitenancy-enabled")
	id := traceIDN(777)
	body := otlpTraceBody(t, id, "tenant-svc", time.Now().Add(-time.Minute))
	send := func(tenantID string) int {
		req, _ := http.NewRequest(http.MethodPost, in.URL("/otlp/v1/traces"), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		if tenantID != "" {
			req.Header.Set("X-Scope-OrgID", tenantID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(""); code != http.StatusUnauthorized {
		t.Fatalf("write without tenant: %d, want 401", code)
	}
	if code := send("team-a"); code/100 != 2 {
		t.Fatalf("write as team-a: %d", code)
	}
	get := func(tenantID string) (int, int) {
		req, _ := http.NewRequest(http.MethodGet, in.URL("/jaeger/api/traces/"+hexID(id)), nil)
		if tenantID != "" {
			req.Header.Set("X-Scope-OrgID", tenantID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, spanCount(body)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if code, n := get("team-a"); code != http.StatusOK || n != 2 {
			return fmt.Errorf("team-a reads its trace: %d, %d spans", code, n)
		}
		return nil
	})
	if code, _ := get("team-b"); code != http.StatusNotFound {
		t.Fatalf("team-b reads team-a's trace: %d, want 404", code)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("read without tenant: %d, want 401", code)
	}
}
