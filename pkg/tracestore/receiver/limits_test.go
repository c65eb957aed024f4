package receiver

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// makeTraces builds n single-span traces with attrs attributes each.
func makeTraces(n, attrs int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "svc")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	for i := 0; i < n; i++ {
		s := spans.AppendEmpty()
		s.SetTraceID(pcommon.TraceID{1, byte(i >> 8), byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
		s.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, byte(i >> 8), byte(i)})
		s.SetName("op")
		for a := 0; a < attrs; a++ {
			s.Attributes().PutStr("k"+string(rune('a'+a%26))+strings.Repeat("x", a/26), "v")
		}
	}
	return td
}

func otlpBody(t testing.TB, td ptrace.Traces, json bool) []byte {
	t.Helper()
	req := ptraceotlp.NewExportRequestFromTraces(td)
	var (
		b   []byte
		err error
	)
	if json {
		b, err = req.MarshalJSON()
	} else {
		b, err = req.MarshalProto()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t testing.TB, url, ct string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// statusMsg decodes the google.rpc.Status an OTLP/HTTP error carries.
func statusMsg(t testing.TB, body string, json bool) string {
	t.Helper()
	st := &spb.Status{}
	var err error
	if json {
		err = protojson.Unmarshal([]byte(body), st)
	} else {
		err = proto.Unmarshal([]byte(body), st)
	}
	if err != nil {
		t.Fatalf("error body is not a google.rpc.Status: %v: %q", err, body)
	}
	return st.GetMessage()
}

func discarded(h *harness, tenant, reason string) float64 {
	return testutil.ToFloat64(h.r.discardedSpans.WithLabelValues(tenant, reason))
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for "+what, args...)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func metadataCtx(tenant string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "X-Scope-OrgID", tenant)
}

func TestRateLimit(t *testing.T) {
	// A refill slow enough that no amount of machine load lets the bucket
	// recover between the pushes below.
	h := newHarness(t, false, staticLimits{rate: 0.001, burst: 10}, 1, 1)
	url := h.http.URL + "/otlp/v1/traces"
	if code, body := post(t, url, ctProtobuf, otlpBody(t, makeTraces(8, 1), false), nil); code != 200 {
		t.Fatalf("first push: %d %s", code, body)
	}
	code, body := post(t, url, ctProtobuf, otlpBody(t, makeTraces(8, 1), false), nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("second push: %d, want 429", code)
	}
	msg := statusMsg(t, body, false)
	for _, want := range []string{"ingestion rate limit", "0.001 spans/s, burst 10", flagRateSpans, "ingestion_rate_spans"} {
		if !strings.Contains(msg, want) {
			t.Errorf("429 message %q lacks %q", msg, want)
		}
	}
	if got := discarded(h, "anonymous", ReasonRateLimited); got != 8 {
		t.Errorf("discarded rate_limited = %v, want 8", got)
	}
	if n := h.ings[0].received("anonymous").SpanCount(); n != 8 {
		t.Errorf("ingester has %d spans, want 8 (second batch refused whole)", n)
	}
	// Zipkin gets the same limit as plain text.
	code, body = post(t, h.http.URL+"/zipkin/api/v2/spans", ctJSON, []byte(`[{"traceId":"1","id":"1","name":"x"},{"traceId":"1","id":"2","name":"x"},{"traceId":"1","id":"3","name":"x"},{"traceId":"1","id":"4","name":"x"},{"traceId":"1","id":"5","name":"x"}]`), nil)
	if code != http.StatusTooManyRequests || !strings.Contains(body, flagRateSpans) {
		t.Errorf("zipkin: %d %q", code, body)
	}
}

func TestPerSpanLimits(t *testing.T) {
	h := newHarness(t, false, staticLimits{attrs: 3, spanBytes: 200}, 1, 1)
	url := h.http.URL + "/otlp/v1/traces"

	// All spans over the attribute limit: 400 naming the limit.
	code, body := post(t, url, ctJSON, otlpBody(t, makeTraces(2, 4), true), nil)
	if code != http.StatusBadRequest {
		t.Fatalf("too many attributes: %d", code)
	}
	msg := statusMsg(t, body, true)
	for _, want := range []string{"has 4 attributes, the limit is 3", flagMaxAttributes, "max_attributes_per_span"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if got := discarded(h, "anonymous", ReasonTooManyAttributes); got != 2 {
		t.Errorf("discarded too_many_attributes = %v", got)
	}

	// Mixed: one oversized span among good ones → 200 partial success,
	// the good ones are stored.
	td := makeTraces(3, 1)
	big := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1)
	big.Attributes().PutStr("blob", strings.Repeat("x", 500))
	code, body = post(t, url, ctProtobuf, otlpBody(t, td, false), nil)
	if code != http.StatusOK {
		t.Fatalf("partial: %d %q", code, body)
	}
	resp := ptraceotlp.NewExportResponse()
	if err := resp.UnmarshalProto([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if resp.PartialSuccess().RejectedSpans() != 1 || !strings.Contains(resp.PartialSuccess().ErrorMessage(), flagMaxSpanBytes) {
		t.Errorf("partial success: %d %q", resp.PartialSuccess().RejectedSpans(), resp.PartialSuccess().ErrorMessage())
	}
	if n := h.ings[0].received("anonymous").SpanCount(); n != 2 {
		t.Errorf("stored %d spans, want 2", n)
	}
	if got := discarded(h, "anonymous", ReasonSpanTooLarge); got != 1 {
		t.Errorf("discarded span_too_large = %v", got)
	}
}

func TestBadInput(t *testing.T) {
	h := newHarness(t, true, staticLimits{}, 1, 1)
	otlp := h.http.URL + "/otlp/v1/traces"
	zk := h.http.URL + "/zipkin/api/v2/spans"
	tenantHdr := map[string]string{"X-Scope-OrgID": "t1"}

	zeroTrace := makeTraces(1, 0)
	zeroTrace.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetTraceID(pcommon.TraceID{})
	zeroSpan := makeTraces(1, 0)
	zeroSpan.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetSpanID(pcommon.SpanID{})

	// 17 MiB of '[' compresses to a few KiB: the decompressed size is what counts.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(bytes.Repeat([]byte("["), 17<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		url    string
		ct     string
		body   []byte
		hdr    map[string]string
		code   int
		msg    string
		isOTLP bool
	}{
		{"no tenant", otlp, ctProtobuf, otlpBody(t, makeTraces(1, 0), false), nil, 401, "X-Scope-OrgID", true},
		{"bad tenant", otlp, ctProtobuf, otlpBody(t, makeTraces(1, 0), false), map[string]string{"X-Scope-OrgID": "../x"}, 400, "tenant ID", true},
		{"malformed otlp proto", otlp, ctProtobuf, []byte{0xff, 0xff, 0xff}, tenantHdr, 400, "malformed OTLP", true},
		{"malformed otlp json", otlp, ctJSON, []byte(`{"resourceSpans":[`), tenantHdr, 400, "malformed OTLP", true},
		{"bad hex trace id json", otlp, ctJSON, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708","name":"x"}]}]}]}`), tenantHdr, 400, "malformed OTLP", true},
		{"zero trace id", otlp, ctProtobuf, otlpBody(t, zeroTrace, false), tenantHdr, 400, "empty (all-zero) trace ID", true},
		{"zero span id", otlp, ctProtobuf, otlpBody(t, zeroSpan, false), tenantHdr, 400, "empty (all-zero) span ID", true},
		{"unsupported type", otlp, "text/plain", []byte("x"), tenantHdr, 415, "unsupported Content-Type", false},
		{"gzip bomb", otlp, ctJSON, gz.Bytes(), map[string]string{"X-Scope-OrgID": "t1", "Content-Encoding": "gzip"}, 413, flagMaxRecvMsg, true},
		{"bad gzip", otlp, ctJSON, []byte("not gzip"), map[string]string{"X-Scope-OrgID": "t1", "Content-Encoding": "gzip"}, 400, "invalid gzip", true},
		{"bad encoding", otlp, ctJSON, []byte("{}"), map[string]string{"X-Scope-OrgID": "t1", "Content-Encoding": "br"}, 415, "unsupported Content-Encoding", true},
		{"zipkin malformed json", zk, ctJSON, []byte(`[{"traceId":`), tenantHdr, 400, "malformed zipkin", false},
		{"zipkin bad trace id", zk, ctJSON, []byte(`[{"traceId":"xyz","id":"1","name":"a"}]`), tenantHdr, 400, "malformed zipkin", false},
		{"zipkin bad span id", zk, ctJSON, []byte(`[{"traceId":"1","id":"12345678901234567","name":"a"}]`), tenantHdr, 400, "malformed zipkin", false},
		{"zipkin malformed proto", zk, ctProtobuf, []byte{0x0a, 0xff}, tenantHdr, 400, "malformed zipkin", false},
		{"zipkin no tenant", zk, ctJSON, []byte(`[]`), nil, 401, "X-Scope-OrgID", false},
		{"zipkin bad type", zk, "text/xml", []byte(`[]`), tenantHdr, 415, "unsupported Content-Type", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, tc.url, tc.ct, tc.body, tc.hdr)
			if code != tc.code {
				t.Fatalf("status %d, want %d: %q", code, tc.code, body)
			}
			msg := body
			if tc.isOTLP {
				msg = statusMsg(t, body, tc.ct == ctJSON)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q lacks %q", msg, tc.msg)
			}
		})
	}
	if got := discarded(h, "t1", ReasonInvalidTraceID); got != 1 {
		t.Errorf("discarded invalid_trace_id = %v", got)
	}
	if n := len(h.allSpans("t1")); n != 0 {
		t.Errorf("bad input reached ingesters: %d spans", n)
	}
	// An empty Zipkin batch is fine.
	if code, body := post(t, zk, ctJSON, []byte(`[]`), tenantHdr); code != http.StatusAccepted {
		t.Errorf("empty zipkin batch: %d %q", code, body)
	}
}

func TestGRPCErrors(t *testing.T) {
	h := newHarness(t, true, staticLimits{rate: 1, burst: 2}, 1, 1)
	addr := h.grpcServer(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := ptraceotlp.NewGRPCClient(conn)
	_, err = c.Export(context.Background(), ptraceotlp.NewExportRequestFromTraces(makeTraces(1, 0)))
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("no tenant: %v", err)
	}
	_, err = c.Export(metadataCtx("t1"), ptraceotlp.NewExportRequestFromTraces(makeTraces(5, 0)))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), flagRateSpans) {
		t.Errorf("rate limit over gRPC: %v", err)
	}
}

func TestReplicationQuorum(t *testing.T) {
	h := newHarness(t, false, staticLimits{}, 3, 3)
	url := h.http.URL + "/otlp/v1/traces"
	if code, body := post(t, url, ctProtobuf, otlpBody(t, makeTraces(4, 1), false), nil); code != 200 {
		t.Fatalf("push: %d %q", code, body)
	}
	// DoBatch returns at quorum (2 of 3); the third write completes in the
	// background, so wait for it with a deadline.
	for i, ing := range h.ings {
		waitFor(t, func() bool { return len(ing.spanSet("anonymous")) == 4 }, "replica %d to hold 4 spans", i)
	}
	// One replica down: a quorum of 2 of 3 still acknowledges.
	h.ings[0].setFail(status.Error(codes.Unavailable, "down"))
	if code, body := post(t, url, ctProtobuf, otlpBody(t, makeTraces(4, 1), false), nil); code != 200 {
		t.Fatalf("one replica down: %d %q", code, body)
	}
	// Two down: no quorum → 503, which clients retry.
	h.ings[1].setFail(status.Error(codes.Unavailable, "down"))
	fed := h.gen.count("anonymous")
	code, body := post(t, url, ctProtobuf, otlpBody(t, makeTraces(4, 1), false), nil)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("two replicas down: %d %q", code, body)
	}
	// The client retries a 503: derived metrics must not count the batch yet.
	if got := h.gen.count("anonymous"); got != fed {
		t.Errorf("generator fed %d spans of a failed write", got-fed)
	}
	// Ingesters refusing the data (a per-trace limit) is the client's
	// problem: 400 with the ingester's message.
	h.ings[0].setFail(nil)
	h.ings[1].setFail(status.Error(codes.InvalidArgument, "trace exceeds max spans per trace"))
	h.ings[2].setFail(status.Error(codes.InvalidArgument, "trace exceeds max spans per trace"))
	code, body = post(t, url, ctJSON, otlpBody(t, makeTraces(1, 1), true), nil)
	if code != http.StatusBadRequest || !strings.Contains(statusMsg(t, body, true), "max spans per trace") {
		t.Fatalf("ingester rejection: %d %q", code, body)
	}
}
