package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
)

// discardedExemplars reads vigil_discarded_exemplars_total{tenant="anonymous",reason} from /metrics.
func discardedExemplars(t *testing.T, in *instance, reason string) float64 {
	t.Helper()
	return discardedTotal(t, in, "vigil_discarded_exemplars_total", reason)
}

// storeV2WithExemplars sends series (samples, native histograms and exemplars) as one remote
// write 2.0 request.
func storeV2WithExemplars(ctx context.Context, c remote.WriteClient, series []prompb.TimeSeries) (remote.WriteResponseStats, error) {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	var b labels.ScratchBuilder
	for _, s := range series {
		ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(s.ToLabels(&b, nil), nil)}
		for _, smp := range s.Samples {
			ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: smp.Timestamp, Value: smp.Value})
		}
		for _, h := range s.Histograms {
			ts.Histograms = append(ts.Histograms, writev2.FromIntHistogram(h.Timestamp, h.ToIntHistogram()))
		}
		for _, e := range s.Exemplars {
			b.Reset()
			for _, l := range e.Labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{LabelsRefs: st.SymbolizeLabels(b.Labels(), nil), Value: e.Value, Timestamp: e.Timestamp})
		}
		ts.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER}
		if len(s.Histograms) > 0 {
			ts.Metadata.Type = writev2.Metadata_METRIC_TYPE_HISTOGRAM
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	return storeV2Request(ctx, c, req)
}

// TestRetriedWriteWithExemplarsSucceeds: Prometheus resends a request after a timeout or a
// 5xx although the first attempt was stored. With several exemplars per series (native
// histograms carry one per bucket; a backlog carries one per scrape) the TSDB refuses the
// older exemplars of the resend as out of order. As with Prometheus' own receiver, that must
// not fail the request: a 400 would make Prometheus drop the batch as non-retryable and count
// it failed. The answer is 2xx, the refused exemplars are counted by reason, the RW 2.0 header
// counts only the exemplars stored, and samples and exemplars are queryable once.
//
// Requests are laid out as Prometheus' queue manager builds them (one entry per sample,
// histogram or exemplar, so a series repeats) and as other senders do (one entry per series).
func TestRetriedWriteWithExemplarsSucceeds(t *testing.T) {
	in := startVigil(t, t.TempDir())
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	const perSeries = 3 // exemplars per series

	// Two float series and a native histogram, one sample each, perSeries exemplars each.
	makeSeries := func(metric string, prometheusLayout bool) []prompb.TimeSeries {
		var out []prompb.TimeSeries
		add := func(ts prompb.TimeSeries) {
			if !prometheusLayout {
				out = append(out, ts)
				return
			}
			for _, s := range ts.Samples {
				out = append(out, prompb.TimeSeries{Labels: ts.Labels, Samples: []prompb.Sample{s}})
			}
			for _, h := range ts.Histograms {
				out = append(out, prompb.TimeSeries{Labels: ts.Labels, Histograms: []prompb.Histogram{h}})
			}
			for _, e := range ts.Exemplars {
				out = append(out, prompb.TimeSeries{Labels: ts.Labels, Exemplars: []prompb.Exemplar{e}})
			}
		}
		exemplars := func(id string) []prompb.Exemplar {
			var ex []prompb.Exemplar
			for i := 0; i < perSeries; i++ {
				ex = append(ex, prompb.Exemplar{
					Labels: series("trace_id", fmt.Sprintf("%s-%d", id, i)), Value: float64(i + 1),
					Timestamp: now.Add(time.Duration(i-perSeries) * time.Second).UnixMilli(),
				})
			}
			return ex
		}
		for s := 0; s < 2; s++ {
			inst := fmt.Sprintf("i%d", s)
			add(prompb.TimeSeries{
				Labels:    series("__name__", metric+"_total", "instance", inst, "job", "api"),
				Samples:   []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 42}},
				Exemplars: exemplars(metric + inst),
			})
		}
		h := &histogram.Histogram{
			Count: 3, Sum: 6, Schema: 0, ZeroThreshold: 1e-128,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []int64{1, 0, 0},
		}
		add(prompb.TimeSeries{
			Labels:     series("__name__", metric+"_seconds", "job", "api"),
			Histograms: []prompb.Histogram{prompb.FromIntHistogram(now.UnixMilli(), h)},
			Exemplars:  exemplars(metric + "h"),
		})
		return out
	}
	const nSeries, nFloat, nHist = 3, 2, 1

	type sendFunc func(remote.WriteClient, []prompb.TimeSeries) (remote.WriteResponseStats, error)
	v1 := func(c remote.WriteClient, s []prompb.TimeSeries) (remote.WriteResponseStats, error) {
		return storeV1(ctx, c, &prompb.WriteRequest{Timeseries: s})
	}
	v2 := func(c remote.WriteClient, s []prompb.TimeSeries) (remote.WriteResponseStats, error) {
		return storeV2WithExemplars(ctx, c, s)
	}
	for _, tc := range []struct {
		name             string
		msg              remoteapi.WriteMessageType
		send             sendFunc
		prometheusLayout bool
	}{
		{"rw1_prometheus_layout", remoteapi.WriteV1MessageType, v1, true},
		{"rw1_one_entry_per_series", remoteapi.WriteV1MessageType, v1, false},
		{"rw2_prometheus_layout", remoteapi.WriteV2MessageType, v2, true},
		{"rw2_one_entry_per_series", remoteapi.WriteV2MessageType, v2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metric := "retried_" + tc.name
			c := writeClient(t, in, "/api/v1/write", tc.msg, "")
			oooBefore := discardedExemplars(t, in, "out_of_order_exemplar")

			first, err := tc.send(c, makeSeries(metric, tc.prometheusLayout))
			if err != nil {
				t.Fatalf("first attempt: %v", err)
			}
			// The resend of the very same request, as Prometheus' queue manager does it.
			retry, err := tc.send(c, makeSeries(metric, tc.prometheusLayout))
			if err != nil {
				t.Fatalf("retried request refused (Prometheus drops the batch as non-retryable): %v", err)
			}

			// Per series the resend's newest exemplar equals the stored newest one (the TSDB
			// takes it as already stored, like an identical sample); the older ones are out of
			// order and refused.
			refused := nSeries * (perSeries - 1)
			if tc.msg == remoteapi.WriteV2MessageType {
				want := remote.WriteResponseStats{Samples: nFloat, Histograms: nHist, Exemplars: nSeries * perSeries, Confirmed: true}
				if first != want {
					t.Errorf("first attempt: written %+v, want %+v", first, want)
				}
				want.Exemplars -= refused
				if retry != want {
					t.Errorf("retry: written %+v, want %+v (identical samples count as stored, refused exemplars do not)", retry, want)
				}
			}
			if got := discardedExemplars(t, in, "out_of_order_exemplar") - oooBefore; got != float64(refused) {
				t.Errorf("vigil_discarded_exemplars_total{reason=out_of_order_exemplar} moved by %v, want %d", got, refused)
			}

			api := queryAPI(t, in, "/prometheus", "")
			sel := fmt.Sprintf(`{__name__=~"%s_.*"}`, metric)
			v, _, err := api.Query(ctx, fmt.Sprintf(`count_over_time(%s[5m])`, sel), now)
			if err != nil {
				t.Fatal(err)
			}
			vec := v.(model.Vector)
			if len(vec) != nSeries {
				t.Fatalf("count_over_time: %v, want %d series", vec, nSeries)
			}
			for _, s := range vec {
				if s.Value != 1 {
					t.Errorf("%v has %v samples, want 1 (stored once)", s.Metric, s.Value)
				}
			}
			ex, err := api.QueryExemplars(ctx, sel, now.Add(-5*time.Minute), now)
			if err != nil {
				t.Fatalf("query_exemplars: %v", err)
			}
			if len(ex) != nSeries {
				t.Fatalf("query_exemplars: %d series, want %d: %+v", len(ex), nSeries, ex)
			}
			for _, r := range ex {
				if len(r.Exemplars) != perSeries {
					t.Errorf("%v: %d exemplars, want %d (each once): %+v", r.SeriesLabels, len(r.Exemplars), perSeries, r.Exemplars)
				}
			}
		})
	}
}
