package distributor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// promClient returns Prometheus' own remote-write client pointed at the test
// server, speaking the given protocol version.
func promClient(t *testing.T, env *testEnv, msg remoteapi.WriteMessageType, headers map[string]string) remote.WriteClient {
	t.Helper()
	u, err := url.Parse(env.srv.URL + "/api/v1/write")
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewWriteClient("test", &remote.ClientConfig{
		URL:           &config_util.URL{URL: u},
		Timeout:       model.Duration(10 * time.Second),
		WriteProtoMsg: msg,
		Headers:       headers,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func encodeV1(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, b)
}

// v2Builder builds remote write 2.0 requests the way Prometheus does, through
// its symbols table.
type v2Builder struct {
	st  writev2.SymbolsTable
	req writev2.Request
}

func newV2Builder() *v2Builder { return &v2Builder{st: writev2.NewSymbolTable()} }

func (b *v2Builder) add(ls labels.Labels, ts writev2.TimeSeries) {
	ts.LabelsRefs = b.st.SymbolizeLabels(ls, nil)
	b.req.Timeseries = append(b.req.Timeseries, ts)
}

func (b *v2Builder) encode(t testing.TB) []byte {
	t.Helper()
	b.req.Symbols = b.st.Symbols()
	raw, err := b.req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func testHistogram() *histogram.Histogram {
	return &histogram.Histogram{
		Count:           5,
		ZeroCount:       1,
		ZeroThreshold:   0.001,
		Sum:             12.5,
		Schema:          1,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
		PositiveBuckets: []int64{2, 0},
	}
}

func TestRemoteWriteV1WithPrometheusClient(t *testing.T) {
	env := newTestEnv(t, envOptions{})
	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{
				// Deliberately unsorted: the distributor must sort.
				Labels:    series("job", "api", "__name__", "http_requests_total", "code", "200"),
				Samples:   []prompb.Sample{{Value: 1, Timestamp: now - 1000}, {Value: 2, Timestamp: now}},
				Exemplars: []prompb.Exemplar{{Labels: series("trace_id", "abc123"), Value: 2, Timestamp: now}},
			},
			{
				Labels:     series("__name__", "rpc_latency_seconds", "job", "api"),
				Histograms: []prompb.Histogram{prompb.FromIntHistogram(now, testHistogram())},
			},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests.", Unit: ""}},
	}
	c := promClient(t, env, remoteapi.WriteV1MessageType, nil)
	if _, err := c.Store(context.Background(), encodeV1(t, req), 0); err != nil {
		t.Fatalf("store: %v", err)
	}

	got := env.allSeries()
	if len(got) != 2 {
		t.Fatalf("got %d series, want 2: %v", len(got), got)
	}
	ts, ok := got[`{__name__="http_requests_total", code="200", job="api"}`]
	if !ok {
		t.Fatalf("sorted series not found in %v", got)
	}
	if len(ts.Samples) != 2 || len(ts.Exemplars) != 1 || ts.Exemplars[0].Labels[0].Value != "abc123" {
		t.Errorf("samples/exemplars not carried: %+v", ts)
	}
	h := got[`{__name__="rpc_latency_seconds", job="api"}`]
	if len(h.Histograms) != 1 || h.Histograms[0].ToIntHistogram().Count != 5 {
		t.Errorf("histogram not carried: %+v", h)
	}
	md := env.allMetadata()
	if len(md) != 1 || md[0].MetricFamilyName != "http_requests_total" || md[0].Help != "Requests." {
		t.Errorf("metadata not carried: %+v", md)
	}
	if got := env.received("anonymous"); got != 3 {
		t.Errorf("received samples counter = %v, want 3", got)
	}
}

func TestRemoteWriteV2WithPrometheusClient(t *testing.T) {
	env := newTestEnv(t, envOptions{})
	now := time.Now().UnixMilli()
	b := newV2Builder()
	b.add(labels.FromStrings("__name__", "http_requests_total", "job", "api"), writev2.TimeSeries{
		Samples:   []writev2.Sample{{Value: 7, Timestamp: now}},
		Exemplars: []writev2.Exemplar{{LabelsRefs: b.st.SymbolizeLabels(labels.FromStrings("trace_id", "t1"), nil), Value: 7, Timestamp: now}},
		Metadata: writev2.Metadata{
			Type:    writev2.Metadata_METRIC_TYPE_COUNTER,
			HelpRef: b.st.Symbolize("Total requests."),
			UnitRef: b.st.Symbolize(""),
		},
	})
	b.add(labels.FromStrings("__name__", "rpc_duration_seconds", "job", "api"), writev2.TimeSeries{
		Histograms: []writev2.Histogram{writev2.FromIntHistogram(now, testHistogram())},
		Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: b.st.Symbolize("RPC latency."), UnitRef: b.st.Symbolize("seconds")},
	})
	b.add(labels.FromStrings("__name__", "queue_fill_ratio", "job", "api"), writev2.TimeSeries{
		Histograms: []writev2.Histogram{writev2.FromFloatHistogram(now, testHistogram().ToFloat(nil))},
	})
	// A classic histogram's _bucket series carries the family's metadata.
	b.add(labels.FromStrings("__name__", "req_size_bucket", "le", "+Inf"), writev2.TimeSeries{
		Samples:  []writev2.Sample{{Value: 3, Timestamp: now}},
		Metadata: writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM, HelpRef: b.st.Symbolize("Sizes."), UnitRef: b.st.Symbolize("bytes")},
	})

	c := promClient(t, env, remoteapi.WriteV2MessageType, nil)
	stats, err := c.Store(context.Background(), b.encode(t), 0)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	if !stats.Confirmed || stats.Samples != 2 || stats.Histograms != 2 || stats.Exemplars != 1 {
		t.Errorf("written stats = %+v, want confirmed 2 samples, 2 histograms, 1 exemplar", stats)
	}
	got := env.allSeries()
	ts := got[`{__name__="http_requests_total", job="api"}`]
	if len(ts.Samples) != 1 || ts.Samples[0].Value != 7 || len(ts.Exemplars) != 1 || ts.Exemplars[0].Labels[0].Name != "trace_id" {
		t.Errorf("RW2 series not converted: %+v", ts)
	}
	hs := got[`{__name__="rpc_duration_seconds", job="api"}`]
	if len(hs.Histograms) != 1 || hs.Histograms[0].ToIntHistogram().Sum != 12.5 {
		t.Errorf("RW2 histogram not converted: %+v", hs)
	}
	fh := got[`{__name__="queue_fill_ratio", job="api"}`]
	if len(fh.Histograms) != 1 || !fh.Histograms[0].IsFloatHistogram() || fh.Histograms[0].ToFloatHistogram().Sum != 12.5 {
		t.Errorf("RW2 float histogram not converted: %+v", fh)
	}
	families := map[string]prompb.MetricMetadata{}
	for _, m := range env.allMetadata() {
		families[m.MetricFamilyName] = m
	}
	if m := families["http_requests_total"]; m.Type != prompb.MetricMetadata_COUNTER || m.Help != "Total requests." {
		t.Errorf("counter metadata = %+v", m)
	}
	if m := families["rpc_duration_seconds"]; m.Type != prompb.MetricMetadata_HISTOGRAM || m.Unit != "seconds" {
		t.Errorf("histogram metadata = %+v", m)
	}
	if m, ok := families["req_size"]; !ok || m.Unit != "bytes" {
		t.Errorf("classic histogram family metadata missing: %+v", families)
	}
}

// limitCase is one validation limit exercised over HTTP.
type limitCase struct {
	name     string
	limits   func(*validation.Limits)
	bad      []prompb.Label
	badTS    int64 // 0 = now
	reason   string
	contains []string
}

func TestRemoteWriteLimits(t *testing.T) {
	now := time.Now()
	long := strings.Repeat("x", 300)
	cases := []limitCase{
		{name: "label name too long", limits: func(l *validation.Limits) { l.MaxLabelNameLength = 20 },
			bad: series("__name__", "m", "a_very_long_label_name_indeed", "v"), reason: ReasonLabelNameTooLong,
			contains: []string{"a_very_long_label_name_indeed", "29 bytes", "limit of 20", "-validation.max-length-label-name", "max_label_name_length"}},
		{name: "label value too long", limits: func(l *validation.Limits) { l.MaxLabelValueLength = 100 },
			bad: series("__name__", "m", "path", long), reason: ReasonLabelValueTooLong,
			contains: []string{`"path"`, "300 bytes", "limit of 100", "-validation.max-length-label-value", "(truncated)"}},
		{name: "too many labels", limits: func(l *validation.Limits) { l.MaxLabelNamesPerSeries = 3 },
			bad: series("__name__", "m", "a", "1", "b", "2", "c", "3"), reason: ReasonMaxLabelNamesPerSeries,
			contains: []string{"4 labels", "limit of 3", "-validation.max-label-names-per-series"}},
		{name: "too far in future", bad: series("__name__", "m", "when", "future"), badTS: now.Add(time.Hour).UnixMilli(),
			reason: ReasonTooFarInFuture, contains: []string{"in the future", "10m0s", "-validation.create-grace-period"}},
		{name: "too far in past", limits: func(l *validation.Limits) { l.PastGracePeriod = time.Hour },
			bad: series("__name__", "m", "when", "past"), badTS: now.Add(-2 * time.Hour).UnixMilli(),
			reason: ReasonTooFarInPast, contains: []string{"in the past", "1h0m0s", "-validation.past-grace-period"}},
		{name: "missing metric name", bad: series("job", "x"), reason: ReasonMissingMetricName, contains: []string{"no metric name"}},
		{name: "invalid label name", bad: series("__name__", "m", "bad\xffname", "v"), reason: ReasonInvalidLabelName, contains: []string{"is not valid"}},
		{name: "invalid label value", bad: series("__name__", "m", "l", "bad\xffvalue"), reason: ReasonInvalidLabelValue, contains: []string{"not valid UTF-8"}},
		{name: "duplicate label names", bad: series("__name__", "m", "dup", "1", "dup", "2"), reason: ReasonDuplicateLabelNames, contains: []string{`"dup" appears more than once`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, envOptions{limits: tc.limits})
			badTS := tc.badTS
			if badTS == 0 {
				badTS = now.UnixMilli()
			}
			// One good and one bad series in the same request, in RW 2.0 so
			// the written headers can be checked too.
			b := newV2Builder()
			b.add(labels.FromStrings("__name__", "good", "job", "ok"), writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now.UnixMilli()}}})
			badRefs := make([]uint32, 0, 2*len(tc.bad))
			for _, l := range tc.bad {
				badRefs = append(badRefs, b.st.Symbolize(l.Name), b.st.Symbolize(l.Value))
			}
			b.req.Timeseries = append(b.req.Timeseries, writev2.TimeSeries{LabelsRefs: badRefs, Samples: []writev2.Sample{{Value: 1, Timestamp: badTS}, {Value: 2, Timestamp: badTS + 1}}})

			code, body, hdr := env.post(t, "/api/v1/push", map[string]string{
				"Content-Type":     "application/x-protobuf;proto=io.prometheus.write.v2.Request",
				"Content-Encoding": "snappy",
			}, bytes.NewReader(b.encode(t)))
			if code != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400; body %s", code, body)
			}
			mustContain(t, body, append([]string{tc.reason, "partial write", "2 samples"}, tc.contains...)...)
			if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "1" {
				t.Errorf("samples written header = %q, want 1 (the good series)", got)
			}
			if got := env.discarded("anonymous", tc.reason); got != 2 {
				t.Errorf("discarded{reason=%s} = %v, want 2", tc.reason, got)
			}
			if _, ok := env.allSeries()[`{__name__="good", job="ok"}`]; !ok {
				t.Errorf("the valid series was not written: %v", env.allSeries())
			}
			if n := len(env.allSeries()); n != 1 {
				t.Errorf("%d series written, want only the good one", n)
			}
		})
	}
}

func TestRemoteWriteRateLimit(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) {
		l.IngestionRate = 0.001 // effectively no refill during the test
		l.IngestionBurstSize = 5
	}})
	mk := func(n int) []byte {
		req := &prompb.WriteRequest{}
		for i := 0; i < n; i++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels:  series("__name__", "m", "i", string(rune('a'+i))),
				Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
			})
		}
		return encodeV1(t, req)
	}
	h := map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
	if code, body, _ := env.post(t, "/api/v1/push", h, bytes.NewReader(mk(4))); code != http.StatusNoContent {
		t.Fatalf("first request: %d %s", code, body)
	}
	code, body, hdr := env.post(t, "/api/v1/push", h, bytes.NewReader(mk(4)))
	if code != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429; body %s", code, body)
	}
	mustContain(t, body, ReasonRateLimited, "-distributor.ingestion-rate-limit", "ingestion_burst_size", "burst 5")
	if hdr.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if got := env.discarded("anonymous", ReasonRateLimited); got != 4 {
		t.Errorf("discarded rate_limited = %v, want 4", got)
	}
	if n := len(env.allSeries()); n != 4 {
		t.Errorf("%d series written, want 4 (only the first request)", n)
	}
	// Larger than the burst: can never succeed, and the message says so.
	code, body, _ = env.post(t, "/api/v1/push", h, bytes.NewReader(mk(6)))
	if code != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429", code)
	}
	mustContain(t, body, "more than the burst size of 5")
}

func TestRemoteWriteBadRequests(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) { l.MaxRecvMsgSize = 2048 }})
	valid := encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: series("__name__", "m"), Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}}}}})
	snappyHdr := map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
	for _, tc := range []struct {
		name     string
		headers  map[string]string
		body     []byte
		code     int
		contains string
	}{
		{"unknown content type", map[string]string{"Content-Type": "application/json"}, valid, http.StatusUnsupportedMediaType, "application/x-protobuf"},
		{"unknown proto message", map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, valid, http.StatusUnsupportedMediaType, "unknown type"},
		{"unsupported encoding", map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, valid, http.StatusUnsupportedMediaType, "gzip"},
		{"not snappy", snappyHdr, []byte("definitely not snappy \xff\xff\xff\xff\xff\xff"), http.StatusBadRequest, "snappy"},
		{"not protobuf", snappyHdr, snappy.Encode(nil, []byte("\xff\xff\xff\xff garbage")), http.StatusBadRequest, "decode remote write 1.0 request"},
		{"bad v2 symbol ref", map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy"},
			func() []byte {
				r := writev2.Request{Symbols: []string{"", "__name__"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 7}}}}
				b, _ := r.Marshal()
				return snappy.Encode(nil, b)
			}(), http.StatusBadRequest, "outside of the symbols table"},
		{"too large compressed", snappyHdr, bytes.Repeat([]byte("abcdefgh"), 400), http.StatusRequestEntityTooLarge, "-distributor.max-recv-msg-size"},
		{"too large decoded", snappyHdr, snappy.Encode(nil, bytes.Repeat([]byte{0x0a, 0x00}, 4096)), http.StatusRequestEntityTooLarge, "after snappy decompression"},
		{"too large v2", map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy"},
			bytes.Repeat([]byte("abcdefgh"), 400), http.StatusRequestEntityTooLarge, "-distributor.max-recv-msg-size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := env.post(t, "/api/v1/push", tc.headers, bytes.NewReader(tc.body))
			if code != tc.code {
				t.Fatalf("status = %d, want %d; body %s", code, tc.code, body)
			}
			mustContain(t, body, tc.contains)
			if strings.Contains(tc.headers["Content-Type"], "write.v2") {
				if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "0" {
					t.Errorf("RW 2.0 error without written headers (samples = %q)", got)
				}
			}
		})
	}
	resp, err := env.srv.Client().Get(env.srv.URL + "/api/v1/push")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET status = %d, want 405", resp.StatusCode)
	}
	if n := len(env.allSeries()); n != 0 {
		t.Errorf("bad requests wrote %d series", n)
	}
}

func TestRemoteWriteTenants(t *testing.T) {
	env := newTestEnv(t, envOptions{multiTenant: true})
	body := func() *bytes.Reader {
		return bytes.NewReader(encodeV1(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: series("__name__", "m"), Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}}}}}))
	}
	h := func(extra ...string) map[string]string {
		m := map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	if code, b, _ := env.post(t, "/api/v1/push", h(), body()); code != http.StatusUnauthorized {
		t.Fatalf("no tenant: status %d (%s), want 401", code, b)
	} else {
		mustContain(t, b, "X-Scope-OrgID")
	}
	if code, b, _ := env.post(t, "/api/v1/push", h("X-Scope-OrgID", "../etc"), body()); code != http.StatusBadRequest {
		t.Fatalf("invalid tenant: status %d (%s), want 400", code, b)
	}
	if code, b, _ := env.post(t, "/api/v1/push", h("X-Scope-OrgID", "team-a"), body()); code != http.StatusNoContent {
		t.Fatalf("team-a: status %d (%s)", code, b)
	}
	if code, b, _ := env.post(t, "/api/v1/write", h("THANOS-TENANT", "team-b"), body()); code != http.StatusNoContent {
		t.Fatalf("team-b: status %d (%s)", code, b)
	}
	fi := env.ingesters[0]
	fi.mu.Lock()
	tenants := append([]string(nil), fi.tenant...)
	fi.mu.Unlock()
	if len(tenants) != 2 || tenants[0] != "team-a" || tenants[1] != "team-b" {
		t.Errorf("ingester saw tenants %v, want [team-a team-b]", tenants)
	}
	if env.received("team-a") != 1 || env.received("team-b") != 1 {
		t.Errorf("received counters per tenant wrong")
	}
}

func TestIngesterRejectionsArePartialWrites(t *testing.T) {
	env := newTestEnv(t, envOptions{ingesters: 3, rf: 3})
	for _, fi := range env.ingesters {
		fi.reject = func(ts prompb.TimeSeries) *ingclient.Rejection {
			for _, l := range ts.Labels {
				if l.Name == "pod" && l.Value == "new" {
					return &ingclient.Rejection{
						Reason:  ingclient.ReasonPerUserSeriesLimit,
						Series:  labelsString(ts.Labels),
						Message: "per-tenant series limit of 100 reached (current 100 series)",
						Count:   int64(len(ts.Samples)),
					}
				}
			}
			return nil
		}
	}
	now := time.Now().UnixMilli()
	b := newV2Builder()
	b.add(labels.FromStrings("__name__", "up", "pod", "old"), writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now}}})
	b.add(labels.FromStrings("__name__", "up", "pod", "new"), writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now}, {Value: 1, Timestamp: now + 1}}})
	code, body, hdr := env.post(t, "/api/v1/push", map[string]string{
		"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy",
	}, bytes.NewReader(b.encode(t)))
	if code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", code, body)
	}
	mustContain(t, body, ReasonPerUserSeriesLimit, `up{pod="new"}`, "current 100 series", "-ingester.max-global-series-per-user", "max_global_series_per_user")
	// Three replicas reported the same refusal: counted once.
	if strings.Count(body, "per-tenant series limit") != 1 {
		t.Errorf("refusal repeated per replica: %s", body)
	}
	if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "1" {
		t.Errorf("samples written = %q, want 1", got)
	}
	if got := env.discarded("anonymous", ReasonPerUserSeriesLimit); got != 2 {
		t.Errorf("discarded per_user_series_limit = %v, want 2", got)
	}
}

func labelsString(ls []prompb.Label) string {
	var b labels.ScratchBuilder
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels().String()
}

func TestReplicationQuorum(t *testing.T) {
	env := newTestEnv(t, envOptions{ingesters: 3, rf: 3})
	mk := func() *bytes.Reader {
		req := &prompb.WriteRequest{}
		for i := 0; i < 50; i++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels:  series("__name__", "m", "i", strings.Repeat("a", i+1)),
				Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
			})
		}
		return bytes.NewReader(encodeV1(t, req))
	}
	h := map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}

	// One of three replicas down: quorum (2) still reached.
	env.ingesters[0].mu.Lock()
	env.ingesters[0].fail = status.Error(codes.Unavailable, "connection refused")
	env.ingesters[0].mu.Unlock()
	if code, body, _ := env.post(t, "/api/v1/push", h, mk()); code != http.StatusNoContent {
		t.Fatalf("one replica down: status %d (%s), want 204", code, body)
	}
	for key := range env.allSeries() {
		copies := 0
		for _, fi := range env.ingesters[1:] {
			if _, ok := fi.series()[key]; ok {
				copies++
			}
		}
		if copies != 2 {
			t.Errorf("series %s on %d healthy replicas, want 2", key, copies)
		}
	}

	// Two of three down: no quorum, a retryable 5xx.
	env.ingesters[1].mu.Lock()
	env.ingesters[1].fail = status.Error(codes.Unavailable, "connection refused")
	env.ingesters[1].mu.Unlock()
	code, body, _ := env.post(t, "/api/v1/push", h, mk())
	if code != http.StatusServiceUnavailable {
		t.Fatalf("two replicas down: status %d (%s), want 503", code, body)
	}
	mustContain(t, body, "retry", "connection refused")

	// A quorum refusing the request as invalid is the client's problem: 400.
	for _, fi := range env.ingesters {
		fi.mu.Lock()
		fi.fail = status.Error(codes.InvalidArgument, "malformed histogram")
		fi.mu.Unlock()
	}
	if code, body, _ := env.post(t, "/api/v1/push", h, mk()); code != http.StatusBadRequest {
		t.Fatalf("invalid at ingesters: status %d (%s), want 400", code, body)
	}
	if got := env.discarded("anonymous", ReasonIngesterRefused); got != 50 {
		t.Errorf("discarded ingester_refused = %v, want 50", got)
	}
}

func TestPushMetricsAPI(t *testing.T) {
	env := newTestEnv(t, envOptions{limits: func(l *validation.Limits) { l.MaxLabelNamesPerSeries = 2 }})
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: series("__name__", "traces_spanmetrics_calls_total", "service", "a"), Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}}},
		{Labels: series("__name__", "x", "a", "1", "b", "2"), Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}}},
	}}
	if _, err := env.d.PushMetrics(context.Background(), req); StatusCode(err) != http.StatusUnauthorized {
		t.Fatalf("without tenant: %v", err)
	}
	res, err := env.d.PushMetrics(userCtx("t1"), req)
	var pe *PushError
	if !errors.As(err, &pe) || pe.Code != http.StatusBadRequest {
		t.Fatalf("want partial 400 PushError, got %v", err)
	}
	if res.Samples != 1 || len(res.Rejections) != 1 || res.Rejections[0].Reason != ReasonMaxLabelNamesPerSeries {
		t.Fatalf("result = %+v", res)
	}
}

// mutableLimits is a TenantLimits whose overrides a test changes at runtime,
// as a reload of the runtime config file does.
type mutableLimits struct {
	mu sync.Mutex
	m  map[string]*validation.Limits
}

func (m *mutableLimits) ByTenant(tenant string) *validation.Limits {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[tenant]
}

func TestLimitsFollowRuntimeOverrides(t *testing.T) {
	env := newTestEnv(t, envOptions{multiTenant: true})
	defaults := defaultTestLimits(t)
	ml := &mutableLimits{m: map[string]*validation.Limits{}}
	o, err := validation.NewOverrides(defaults, ml)
	if err != nil {
		t.Fatal(err)
	}
	env.d.overrides = o

	req := func() *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  series("__name__", "m", "a", "1", "b", "2"),
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
		}}}
	}
	if _, err := env.d.PushMetrics(userCtx("t1"), req()); err != nil {
		t.Fatalf("with defaults: %v", err)
	}
	strict := defaults
	strict.MaxLabelNamesPerSeries = 2
	ml.mu.Lock()
	ml.m["t1"] = &strict
	ml.mu.Unlock()
	if _, err := env.d.PushMetrics(userCtx("t1"), req()); StatusCode(err) != http.StatusBadRequest {
		t.Fatalf("after override: %v, want 400", err)
	}
	// Other tenants keep the defaults.
	if _, err := env.d.PushMetrics(userCtx("t2"), req()); err != nil {
		t.Fatalf("other tenant: %v", err)
	}
}

// TestIngesterExemplarRejectionsKeepSamples: an exemplar the ingester refuses (older
// than the series' newest exemplar, as a retried request with several exemplars per
// series produces) is reported and counted as an exemplar, not as a sample: the
// series' samples were stored and the written headers say so. Out-of-order and
// duplicate exemplars do not fail the write (as with Prometheus' own receiver); an
// invalid exemplar does.
func TestIngesterExemplarRejectionsKeepSamples(t *testing.T) {
	for _, tc := range []struct {
		reason string
		code   int
	}{
		{ReasonOutOfOrderExemplar, http.StatusNoContent},
		{ReasonDuplicateExemplar, http.StatusNoContent},
		{ReasonInvalidExemplar, http.StatusBadRequest},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			env := newTestEnv(t, envOptions{})
			env.ingesters[0].reject = func(ts prompb.TimeSeries) *ingclient.Rejection {
				if len(ts.Exemplars) == 0 {
					return nil
				}
				// What pkg/ingester answers: the samples are appended, the exemplar is not.
				return &ingclient.Rejection{Reason: tc.reason, Series: labelsString(ts.Labels), Message: "exemplar at 2026-01-01T00:00:00Z: out of order exemplar", Count: 1}
			}
			now := time.Now().UnixMilli()
			b := newV2Builder()
			b.add(labels.FromStrings("__name__", "http_requests_total", "job", "api"), writev2.TimeSeries{
				Samples:   []writev2.Sample{{Value: 1, Timestamp: now - 1000}, {Value: 2, Timestamp: now}},
				Exemplars: []writev2.Exemplar{{LabelsRefs: b.st.SymbolizeLabels(labels.FromStrings("trace_id", "t1"), nil), Value: 2, Timestamp: now}},
			})
			code, body, hdr := env.post(t, "/api/v1/write", map[string]string{
				"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy",
			}, bytes.NewReader(b.encode(t)))
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, body)
			}
			if tc.code == http.StatusBadRequest {
				mustContain(t, body, tc.reason, "0 samples, 0 histograms and 1 exemplars were rejected", `http_requests_total{job="api"}`)
			}
			if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "2" {
				t.Errorf("samples written = %q, want 2 (the exemplar's series was stored)", got)
			}
			if got := hdr.Get("X-Prometheus-Remote-Write-Exemplars-Written"); got != "0" {
				t.Errorf("exemplars written = %q, want 0", got)
			}
			if got := env.discarded("anonymous", tc.reason); got != 0 {
				t.Errorf("vigil_discarded_samples_total{reason=%s} = %v, want 0", tc.reason, got)
			}
			if got := testutil.ToFloat64(env.d.metrics.discardedExemplar.WithLabelValues("anonymous", tc.reason)); got != 1 {
				t.Errorf("vigil_discarded_exemplars_total{reason=%s} = %v, want 1", tc.reason, got)
			}
		})
	}
}

// TestOutOfOrderExemplarsFromReplicasOfRepeatedEntries: Prometheus' queue manager sends
// one entry per sample and per exemplar, so a series repeats within a request and an
// ingester reports one refusal per entry. Those add up; the replicas' identical reports
// do not. A write of nothing but refused exemplars is a 400, because a 2xx with nothing
// written means "ignored" to a remote write 2.0 sender; a soft refusal next to a hard one
// is listed in the 400 with it.
func TestOutOfOrderExemplarsFromReplicasOfRepeatedEntries(t *testing.T) {
	now := time.Now().UnixMilli()
	lset := labels.FromStrings("__name__", "rpc_seconds", "job", "api")
	exemplarEntry := func(b *v2Builder, i int) {
		b.add(lset, writev2.TimeSeries{Exemplars: []writev2.Exemplar{{
			LabelsRefs: b.st.SymbolizeLabels(labels.FromStrings("trace_id", fmt.Sprint(i)), nil), Value: float64(i), Timestamp: now - int64(10-i),
		}}})
	}
	post := func(t *testing.T, env *testEnv, b *v2Builder) (int, string, http.Header) {
		return env.post(t, "/api/v1/write", map[string]string{
			"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy",
		}, bytes.NewReader(b.encode(t)))
	}
	// The ingesters refuse every exemplar but the one with value 3 (the newest, a duplicate
	// the TSDB takes as stored), and samples of pod="limited".
	reject := func(ts prompb.TimeSeries) *ingclient.Rejection {
		for _, l := range ts.Labels {
			if l.Name == "pod" && l.Value == "limited" {
				return &ingclient.Rejection{Reason: ingclient.ReasonPerUserSeriesLimit, Series: labelsString(ts.Labels), Message: "per-tenant series limit of 1 in-memory series reached", Count: int64(len(ts.Samples))}
			}
		}
		if len(ts.Exemplars) == 1 && ts.Exemplars[0].Value != 3 {
			return &ingclient.Rejection{Reason: ingclient.ReasonOutOfOrderExemplar, Series: labelsString(ts.Labels), Message: "out of order exemplar", Count: 1}
		}
		return nil
	}
	newEnv := func(t *testing.T) *testEnv {
		env := newTestEnv(t, envOptions{ingesters: 3, rf: 3})
		for _, fi := range env.ingesters {
			fi.reject = reject
		}
		return env
	}
	ooo := func(env *testEnv) float64 {
		return testutil.ToFloat64(env.d.metrics.discardedExemplar.WithLabelValues("anonymous", ReasonOutOfOrderExemplar))
	}

	t.Run("retry", func(t *testing.T) {
		env := newEnv(t)
		b := newV2Builder()
		b.add(lset, writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now}}})
		for i := 1; i <= 3; i++ {
			exemplarEntry(b, i)
		}
		code, body, hdr := post(t, env, b)
		if code != http.StatusNoContent {
			t.Fatalf("status %d, want 204: %s", code, body)
		}
		if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "1" {
			t.Errorf("samples written = %q, want 1", got)
		}
		if got := hdr.Get("X-Prometheus-Remote-Write-Exemplars-Written"); got != "1" {
			t.Errorf("exemplars written = %q, want 1", got)
		}
		if got := ooo(env); got != 2 {
			t.Errorf("vigil_discarded_exemplars_total{reason=out_of_order_exemplar} = %v, want 2 (two entries refused, reported by three replicas)", got)
		}
	})
	t.Run("nothing written", func(t *testing.T) {
		env := newEnv(t)
		b := newV2Builder()
		exemplarEntry(b, 1)
		exemplarEntry(b, 2)
		code, body, hdr := post(t, env, b)
		if code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400: %s", code, body)
		}
		mustContain(t, body, "2 exemplars were rejected", ReasonOutOfOrderExemplar, "-ingester.out-of-order-time-window")
		if got := hdr.Get("X-Prometheus-Remote-Write-Exemplars-Written"); got != "0" {
			t.Errorf("exemplars written = %q, want 0", got)
		}
		if got := ooo(env); got != 2 {
			t.Errorf("vigil_discarded_exemplars_total{reason=out_of_order_exemplar} = %v, want 2", got)
		}
	})
	t.Run("next to a hard refusal", func(t *testing.T) {
		env := newEnv(t)
		b := newV2Builder()
		b.add(lset, writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now}}})
		exemplarEntry(b, 1)
		b.add(labels.FromStrings("__name__", "rpc_seconds", "pod", "limited"), writev2.TimeSeries{Samples: []writev2.Sample{{Value: 1, Timestamp: now}}})
		code, body, hdr := post(t, env, b)
		if code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400: %s", code, body)
		}
		mustContain(t, body, ReasonPerUserSeriesLimit, ReasonOutOfOrderExemplar, "1 samples, 0 histograms and 1 exemplars were rejected")
		if got := hdr.Get("X-Prometheus-Remote-Write-Samples-Written"); got != "1" {
			t.Errorf("samples written = %q, want 1", got)
		}
	})
}
