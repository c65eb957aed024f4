package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// rawPush sends body to /api/v1/push with the given headers and returns status and body.
func rawPush(t *testing.T, in *instance, body []byte, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.URL("/api/v1/push"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// limitKeys are the YAML keys of the per-tenant limits (the runtime file's overrides).
var limitKeys = func() map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeFor[validation.Limits]()
	for i := range t.NumField() {
		keys[strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]] = true
	}
	return keys
}()

var rw1Headers = map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy", "X-Prometheus-Remote-Write-Version": "0.1.0"}

func encodeRW1(t *testing.T, req *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// discarded reads vigil_discarded_samples_total{tenant="anonymous",reason} from /metrics.
func discarded(t *testing.T, in *instance, reason string) float64 {
	t.Helper()
	return discardedTotal(t, in, "vigil_discarded_samples_total", reason)
}

// discardedTotal reads metric{tenant="anonymous",reason} from /metrics (0 when absent).
func discardedTotal(t *testing.T, in *instance, metric, reason string) float64 {
	t.Helper()
	return scrapeValue(t, in, metric, "reason", reason, "tenant", "anonymous")
}

// scrapeValue reads the first series of metric on /metrics whose labels
// include the given name/value pairs (0 when there is none). The pairs must be
// in label-name order, as the text format writes them.
func scrapeValue(t *testing.T, in *instance, metric string, labelPairs ...string) float64 {
	t.Helper()
	resp, err := http.Get(in.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	pattern := `(?m)^` + regexp.QuoteMeta(metric) + `\{`
	for i := 0; i+1 < len(labelPairs); i += 2 {
		pattern += `[^}]*` + regexp.QuoteMeta(labelPairs[i]) + `="` + regexp.QuoteMeta(labelPairs[i+1]) + `"`
	}
	m := regexp.MustCompile(pattern + `[^}]*\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestLimitsAndBadInputThroughTheBinary: every refusal is a 4xx whose body says what and
// why, is counted by reason, never drops the valid rest of the request, and per-tenant
// overrides in the runtime file apply without a restart.
func TestLimitsAndBadInputThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	overrides := filepath.Join(dir, "overrides.yaml")
	if err := os.WriteFile(overrides, []byte("overrides: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := startVigil(t, filepath.Join(dir, "data"),
		"-runtime-config.file="+overrides, "-runtime-config.reload-period=500ms",
		"-validation.max-label-names-per-series=5", "-distributor.max-recv-msg-size=65536")
	now := time.Now().UnixMilli()

	// One series over the label limit next to a valid one: 400 naming the limit and how to
	// raise it; the valid series is written.
	tooMany := series("__name__", "limited_metric", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5")
	valid := series("__name__", "limited_metric", "a", "ok")
	mixed := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: tooMany, Samples: []prompb.Sample{{Timestamp: now, Value: 1}}},
		{Labels: valid, Samples: []prompb.Sample{{Timestamp: now, Value: 2}}},
	}}
	code, body := rawPush(t, in, encodeRW1(t, mixed), rw1Headers)
	if code != http.StatusBadRequest || !strings.Contains(body, "max_label_names_per_series") || !strings.Contains(body, "-validation.max-label-names-per-series") {
		t.Fatalf("label limit: %d %q", code, body)
	}
	if n := discarded(t, in, "max_label_names_per_series"); n != 1 {
		t.Fatalf("vigil_discarded_samples_total{reason=max_label_names_per_series} = %v, want 1", n)
	}
	v, _, err := queryAPI(t, in, "/prometheus", "").Query(context.Background(), `limited_metric`, time.UnixMilli(now))
	if err != nil || len(v.(model.Vector)) != 1 || v.(model.Vector)[0].Value != 2 {
		t.Fatalf("the valid series of a partially refused write: %v %v", v, err)
	}

	// Raise the limit for the tenant in the runtime file: the same series is accepted
	// without a restart.
	if err := os.WriteFile(overrides, []byte("overrides:\n  anonymous:\n    max_label_names_per_series: 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		retry := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: tooMany, Samples: []prompb.Sample{{Timestamp: now + 1000, Value: 3}}}}}
		if code, body := rawPush(t, in, encodeRW1(t, retry), rw1Headers); code/100 != 2 {
			return fmt.Errorf("after raising the override: %d %s", code, body)
		}
		return nil
	})

	// Series limits, enforced by the ingester where series are created, set in the runtime
	// file: the 400 names the limit, the series and the flag and override raising it.
	for _, lc := range []struct {
		overrides, reason, flag, key string
		push                         func(attempt int) (*prompb.WriteRequest, string)
	}{
		{
			overrides: "max_global_series_per_user: 1", reason: "per_user_series_limit",
			flag: "-ingester.max-global-series-per-user", key: `"max_global_series_per_user"`,
			push: func(attempt int) (*prompb.WriteRequest, string) {
				// Every attempt is a new series: refused once the override is loaded.
				name := fmt.Sprintf("series_limit_probe_%d", attempt)
				return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: series("__name__", name), Samples: []prompb.Sample{{Timestamp: now, Value: 1}}}}}, name
			},
		},
		{
			overrides: "max_global_series_per_metric: 1", reason: "per_metric_series_limit",
			flag: "-ingester.max-global-series-per-metric", key: `"max_global_series_per_metric"`,
			push: func(attempt int) (*prompb.WriteRequest, string) {
				name := fmt.Sprintf("metric_limit_probe_%d", attempt)
				return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
					{Labels: series("__name__", name, "i", "a"), Samples: []prompb.Sample{{Timestamp: now, Value: 1}}},
					{Labels: series("__name__", name, "i", "b"), Samples: []prompb.Sample{{Timestamp: now, Value: 1}}},
				}}, name + `{i="b"}`
			},
		},
	} {
		if err := os.WriteFile(overrides, []byte("overrides:\n  anonymous:\n    max_label_names_per_series: 10\n    "+lc.overrides+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		attempt := 0
		var body string
		testutil.Eventually(t, 30*time.Second, func() error {
			attempt++
			req, _ := lc.push(attempt)
			var code int
			code, body = rawPush(t, in, encodeRW1(t, req), rw1Headers)
			if code != http.StatusBadRequest || !strings.Contains(body, lc.reason) {
				return fmt.Errorf("%s: %d %q", lc.reason, code, body)
			}
			return nil
		})
		_, refused := lc.push(attempt)
		for _, want := range []string{refused, lc.flag, lc.key, "series limit of 1 "} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: body %q lacks %q", lc.reason, body, want)
			}
		}
		// Every override the message points to exists.
		for _, key := range regexp.MustCompile(`\bmax_[a-z_]+`).FindAllString(body, -1) {
			if !limitKeys[key] {
				t.Errorf("%s: body %q names %q, which is no per-tenant override", lc.reason, body, key)
			}
		}
		if n := discarded(t, in, lc.reason); n < 1 {
			t.Errorf("vigil_discarded_samples_total{reason=%s} = %v, want >= 1", lc.reason, n)
		}
	}

	// Rate limit from the runtime file: 429 with Retry-After semantics in the message.
	if err := os.WriteFile(overrides, []byte("overrides:\n  anonymous:\n    ingestion_rate: 1\n    ingestion_burst_size: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		req := &prompb.WriteRequest{}
		for i := 0; i < 10; i++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: series("__name__", "rate_probe", "i", fmt.Sprint(i)), Samples: []prompb.Sample{{Timestamp: now, Value: 1}}})
		}
		code, body := rawPush(t, in, encodeRW1(t, req), rw1Headers)
		if code != http.StatusTooManyRequests || !strings.Contains(body, "rate") {
			return fmt.Errorf("rate limit: %d %q", code, body)
		}
		return nil
	})
	if n := discarded(t, in, "rate_limited"); n < 10 {
		t.Fatalf("vigil_discarded_samples_total{reason=rate_limited} = %v, want >= 10", n)
	}

	// Malformed, unsupported and oversized bodies.
	for _, tc := range []struct {
		name   string
		body   []byte
		header map[string]string
		code   int
	}{
		{"not snappy", []byte("this is not snappy"), rw1Headers, http.StatusBadRequest},
		{"snappy but not protobuf", snappy.Encode(nil, []byte{0xff, 0xff, 0xff, 0xff}), rw1Headers, http.StatusBadRequest},
		{"unknown content type", encodeRW1(t, mixed), map[string]string{"Content-Type": "application/json", "Content-Encoding": "snappy"}, http.StatusUnsupportedMediaType},
		{"unknown RW message", encodeRW1(t, mixed), map[string]string{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v9.Request", "Content-Encoding": "snappy"}, http.StatusUnsupportedMediaType},
		{"oversized", bytes.Repeat([]byte{'x'}, 200_000), rw1Headers, http.StatusRequestEntityTooLarge},
	} {
		// Refused before any sample is decoded, so they are counted per
		// request, by status code.
		answered := func() float64 {
			return scrapeValue(t, in, "vigil_request_duration_seconds_count", "route", "api_v1_push", "status_code", strconv.Itoa(tc.code))
		}
		before := answered()
		code, body := rawPush(t, in, tc.body, tc.header)
		if code != tc.code || strings.TrimSpace(body) == "" {
			t.Errorf("%s: %d %q, want %d with an explanation", tc.name, code, body, tc.code)
		}
		// The server records the request after the handler returned,
		// which may be after the client read the answer.
		for deadline := time.Now().Add(5 * time.Second); answered() < before+1 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if got := answered(); got != before+1 {
			t.Errorf("%s: vigil_request_duration_seconds_count{route=\"api_v1_push\",status_code=\"%d\"} went from %v to %v, want one more", tc.name, tc.code, before, got)
		}
	}

	// Vigil is still up and serving after all of that.
	resp, err := http.Get(in.URL("/ready"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready after bad input: %v %v", resp, err)
	}
	resp.Body.Close()
}
