package distributor

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// fuzzLimits are tight limits so fuzzed inputs exercise every check.
func fuzzLimits() seriesLimits {
	now := time.Unix(1_700_000_000, 0)
	return seriesLimits{
		maxNameLen: 64, maxValueLen: 128, maxLabels: 10,
		creationGrace: time.Hour, pastGrace: 24 * time.Hour,
		minT: now.Add(-24 * time.Hour).UnixMilli(), maxT: now.Add(time.Hour).UnixMilli(),
	}
}

// checkValidated asserts what the ingesters rely on after validation:
// sorted, unique, non-empty label names, a metric name, and a sharding token.
func checkValidated(t *testing.T, req *prompb.WriteRequest, rej *rejections) {
	t.Helper()
	lim := fuzzLimits()
	for _, ts := range req.Timeseries {
		if !slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
			t.Fatalf("labels not sorted: %v", ts.Labels)
		}
		hasName := false
		for i, l := range ts.Labels {
			if i > 0 && ts.Labels[i-1].Name == l.Name {
				t.Fatalf("duplicate label %q kept", l.Name)
			}
			if l.Value == "" || len(l.Name) > lim.maxNameLen || len(l.Value) > lim.maxValueLen {
				t.Fatalf("label %q=%q should have been refused", l.Name, l.Value)
			}
			hasName = hasName || l.Name == "__name__"
		}
		if !hasName || len(ts.Labels) > lim.maxLabels {
			t.Fatalf("series %v should have been refused", ts.Labels)
		}
		for _, s := range ts.Samples {
			if s.Timestamp < lim.minT || s.Timestamp > lim.maxT {
				t.Fatalf("sample at %d kept outside [%d, %d]", s.Timestamp, lim.minT, lim.maxT)
			}
		}
		_ = shardToken("tenant", ts.Labels)
	}
	for _, r := range rej.list {
		if r.Reason == "" || r.Message == "" {
			t.Fatalf("rejection without reason or message: %+v", r)
		}
	}
	if rej.list != nil {
		_ = partialError(PushResult{Rejections: rej.list}).Error()
	}
}

func seedV1(f *testing.F) {
	now := time.Unix(1_700_000_000, 0).UnixMilli()
	for _, req := range []*prompb.WriteRequest{
		{},
		{Timeseries: []prompb.TimeSeries{{Labels: series("__name__", "up", "job", "a"), Samples: []prompb.Sample{{Value: 1, Timestamp: now}}}}},
		{Timeseries: []prompb.TimeSeries{{
			Labels:     series("z", "1", "__name__", "h", "a", "", "z", "2"),
			Histograms: []prompb.Histogram{prompb.FromIntHistogram(now, testHistogram())},
			Exemplars:  []prompb.Exemplar{{Labels: series("trace_id", strings.Repeat("x", 200)), Timestamp: now}},
		}}, Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_HISTOGRAM, MetricFamilyName: "h"}}},
		{Timeseries: []prompb.TimeSeries{{Labels: series("__name__", strings.Repeat("n", 100)), Samples: []prompb.Sample{{Timestamp: now * 2}}}}},
	} {
		b, err := req.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
}

func FuzzRemoteWriteV1Decode(f *testing.F) {
	seedV1(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req prompb.WriteRequest
		if err := req.Unmarshal(data); err != nil {
			return
		}
		// Differential check: the zero-copy decoder used on the HTTP path
		// must agree with the generated one on everything it accepts.
		var fast prompb.WriteRequest
		if err := unmarshalWriteRequestNoCopy(data, &fast); err != nil {
			t.Fatalf("zero-copy decoder refused what gogo accepted: %v", err)
		}
		assertSameRequest(t, &req, &fast)
		lim := fuzzLimits()
		var rej rejections
		validateRequest(&req, &lim, &rej)
		checkValidated(t, &req, &rej)
	})
}

func FuzzRemoteWriteV2Decode(f *testing.F) {
	now := time.Unix(1_700_000_000, 0).UnixMilli()
	b := newV2Builder()
	b.add(labels.FromStrings("__name__", "up", "job", "a"), writev2.TimeSeries{
		Samples:   []writev2.Sample{{Value: 1, Timestamp: now}},
		Exemplars: []writev2.Exemplar{{LabelsRefs: b.st.SymbolizeLabels(labels.FromStrings("trace_id", "t"), nil), Timestamp: now}},
		Metadata:  writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: b.st.Symbolize("help")},
	})
	b.add(labels.FromStrings("__name__", "h_bucket", "le", "1"), writev2.TimeSeries{
		Histograms: []writev2.Histogram{writev2.FromIntHistogram(now, testHistogram())},
		Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM},
	})
	b.req.Symbols = b.st.Symbols()
	raw, err := b.req.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	bad := writev2.Request{Symbols: []string{"", "a"}, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 9, 1}, Metadata: writev2.Metadata{HelpRef: 99}}}}
	raw, err = bad.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		var v2 writev2.Request
		if err := v2.Unmarshal(data); err != nil {
			return
		}
		req, err := convertV2(&v2)
		if err != nil {
			return
		}
		lim := fuzzLimits()
		var rej rejections
		validateRequest(req, &lim, &rej)
		checkValidated(t, req, &rej)
	})
}

func fuzzOTLP(t *testing.T, d *Distributor, req pmetricotlp.ExportRequest) {
	wr, _ := d.convertOTLP(context.Background(), req.Metrics())
	lim := fuzzLimits()
	var rej rejections
	validateRequest(wr, &lim, &rej)
	checkValidated(t, wr, &rej)
}

func FuzzOTLPMetricsJSON(f *testing.F) {
	md := sampleOTLPMetrics(time.Unix(1_700_000_000, 0))
	f.Add(mustJSON(f, md))
	f.Add([]byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"x","gauge":{"dataPoints":[{"asInt":"1","timeUnixNano":"1700000000000000000"}]}}]}]}]}`))
	f.Add([]byte(`{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"","sum":{"aggregationTemporality":1,"dataPoints":[{}]}}]}]}]}`))
	f.Add([]byte(`{`))
	d := &Distributor{cfg: defaultTestConfig(f)}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := pmetricotlp.NewExportRequest()
		if err := req.UnmarshalJSON(data); err != nil {
			return
		}
		fuzzOTLP(t, d, req)
	})
}

func FuzzOTLPMetricsProto(f *testing.F) {
	md := sampleOTLPMetrics(time.Unix(1_700_000_000, 0))
	f.Add(otlpProto(f, md))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	d := &Distributor{cfg: defaultTestConfig(f)}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := pmetricotlp.NewExportRequest()
		if err := req.UnmarshalProto(data); err != nil {
			return
		}
		fuzzOTLP(t, d, req)
	})
}

type marshaler interface{ Marshal() ([]byte, error) }

func sameMarshaled[T marshaler](t *testing.T, what string, a, b []T) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d", what, len(a), len(b))
	}
	for i := range a {
		x, err1 := a[i].Marshal()
		y, err2 := b[i].Marshal()
		if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s[%d] differs", what, i)
		}
	}
}

func assertSameRequest(t *testing.T, want, got *prompb.WriteRequest) {
	t.Helper()
	if len(want.Timeseries) != len(got.Timeseries) {
		t.Fatalf("timeseries: %d vs %d", len(want.Timeseries), len(got.Timeseries))
	}
	for i := range want.Timeseries {
		w, g := &want.Timeseries[i], &got.Timeseries[i]
		if len(w.Labels) != len(g.Labels) {
			t.Fatalf("series %d labels: %d vs %d", i, len(w.Labels), len(g.Labels))
		}
		for j := range w.Labels {
			if w.Labels[j].Name != g.Labels[j].Name || w.Labels[j].Value != g.Labels[j].Value {
				t.Fatalf("series %d label %d: %q=%q vs %q=%q", i, j, w.Labels[j].Name, w.Labels[j].Value, g.Labels[j].Name, g.Labels[j].Value)
			}
		}
		sameMarshaled(t, "samples", ptrs(w.Samples), ptrs(g.Samples))
		sameMarshaled(t, "histograms", ptrs(w.Histograms), ptrs(g.Histograms))
		sameMarshaled(t, "exemplars", ptrs(w.Exemplars), ptrs(g.Exemplars))
	}
	sameMarshaled(t, "metadata", ptrs(want.Metadata), ptrs(got.Metadata))
}

func ptrs[T any](s []T) []*T {
	out := make([]*T, len(s))
	for i := range s {
		out[i] = &s[i]
	}
	return out
}
