// Package api_test runs the Jaeger, Zipkin and Tempo APIs over the real
// trace store (pkg/tracestore's ingester head), not the in-memory test
// Reader, so differences between the two show up here.
package api_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/apitest"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/jaeger"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/tempo"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/zipkin"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

func TestAPIsOverRealStore(t *testing.T) {
	var cfg tracestore.IngesterConfig
	cfg.RegisterFlags(flag.NewFlagSet("ingester", flag.PanicOnError))
	cfg.DataDir = t.TempDir()
	ing, err := tracestore.NewTraceIngester(cfg, objstore.NewInMemBucket(), nil, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), ing) })

	// Recent data, so the APIs' default time windows include it.
	t0 := time.Now().Add(-5 * time.Minute).Truncate(time.Millisecond)
	if _, err := ing.Export(user.InjectOrgID(ctx, "anonymous"), ptraceotlp.NewExportRequestFromTraces(apitest.Sample(t0))); err != nil {
		t.Fatal(err)
	}

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := mux.NewRouter()
	jaeger.New(ing, false, logger).RegisterHTTP(r, "/jaeger")
	zipkin.New(ing, false, logger).RegisterHTTP(r, "/zipkin")
	tempo.New(ing, false, logger).RegisterHTTP(r, "/tempo")
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	get := func(path string, accept string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	a, b := apitest.TraceA().String(), apitest.TraceB().String()
	// Trace A links to trace B, so B's ID appears inside A; a result
	// holding trace B shows it as a trace's own ID.
	bResult := `"traceID":"` + b + `","spans"`
	us := func(d time.Duration) string { return strconv.FormatInt(t0.Add(d).UnixMicro(), 10) }

	for _, tc := range []struct {
		path     string
		contains []string
		absent   []string
	}{
		{"/jaeger/api/services", []string{`"data":["frontend","payments"]`, `"errors":null`}, nil},
		{"/jaeger/api/operations?service=frontend", []string{`{"name":"GET /checkout","spanKind":"server"}`, `{"name":"POST /pay","spanKind":"client"}`}, nil},
		{"/jaeger/api/traces/" + a, []string{`"operationName":"charge"`, `"refType":"CHILD_OF"`, `"processes":{"p1"`}, nil},
		{"/jaeger/api/traces?service=payments&start=" + us(-time.Minute) + "&end=" + us(5*time.Minute), []string{`"traceID":"` + b, `"traceID":"` + a, `"total":2`}, nil},
		{"/jaeger/api/traces?tags=" + url.QueryEscape(`{"payment.method":"card"}`), []string{`"traceID":"` + a, `"total":1`}, []string{bResult}},
		{"/jaeger/api/traces?minDuration=100ms", []string{`"traceID":"` + a}, []string{bResult}},
		{"/jaeger/api/traces?service=nobody", []string{`"data":[]`}, nil},
		{"/jaeger/api/dependencies", []string{`{"parent":"frontend","child":"payments","callCount":1}`}, nil},
		{"/jaeger/api/v3/traces/" + a, []string{`{"result":{"resourceSpans":[`}, nil},
		{"/jaeger/api/v3/trace-summaries?query.service_name=frontend", []string{`"rootServiceName":"frontend"`, `"spanCount":3`}, nil},
		{"/zipkin/api/v2/services", []string{`["frontend","payments"]`}, nil},
		{"/zipkin/api/v2/trace/" + a, []string{`"parentId":"0000000000000002"`, `"kind":"SERVER"`}, nil},
		{"/zipkin/api/v2/traces?serviceName=payments&spanName=reconcile", []string{`"traceId":"` + b[16:]}, []string{`"traceId":"` + a}},
		{"/zipkin/api/v2/autocompleteValues?key=env", []string{`["prod"]`}, nil},
		{"/tempo/api/search?tags=" + url.QueryEscape("service.name=frontend"), []string{`"rootTraceName":"GET /checkout"`}, nil},
	} {
		code, body := get(tc.path, "")
		if code != http.StatusOK {
			t.Errorf("%s: %d %s", tc.path, code, body)
			continue
		}
		for _, want := range tc.contains {
			if !strings.Contains(string(body), want) {
				t.Errorf("%s: body lacks %s\n%s", tc.path, want, body)
			}
		}
		for _, no := range tc.absent {
			if strings.Contains(string(body), no) {
				t.Errorf("%s: body has %s\n%s", tc.path, no, body)
			}
		}
	}
	code, body := get("/tempo/api/traces/"+a, "application/protobuf")
	if code != http.StatusOK {
		t.Fatalf("tempo protobuf: %d", code)
	}
	td, err := translate.OTLPFromProto(body)
	if err != nil || td.SpanCount() != 3 {
		t.Errorf("tempo protobuf: %v, %d spans", err, td.SpanCount())
	}
	// The trace read back equals what was written, span for span.
	code, body = get("/jaeger/api/v3/traces/"+a, "")
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body, &env); code != http.StatusOK || err != nil {
		t.Fatalf("v3: %d %v", code, err)
	}
	back, err := translate.OTLPFromJSON(env.Result)
	if err != nil {
		t.Fatal(err)
	}
	want := translate.JaegerTracesFromOTLP(apitest.Sample(t0))
	got := translate.JaegerTracesFromOTLP(back)
	wantA := traceJSON(t, want, a)
	gotA := traceJSON(t, got, a)
	if wantA != gotA {
		t.Errorf("trace read back differs\n got %s\nwant %s", gotA, wantA)
	}
}

// traceJSON renders one trace with spans in start order, so the storage
// engine's span order does not matter.
func traceJSON(t *testing.T, traces []translate.JaegerTrace, id string) string {
	t.Helper()
	for _, tr := range traces {
		if tr.TraceID == id {
			translate.SortSpans(&tr)
			b, err := json.Marshal(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
	t.Fatalf("trace %s missing", id)
	return ""
}
