package client

import (
	"bytes"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/mem"
)

// The decoder itself is tested against prompb's generated one, fuzz test included,
// in pkg/util/rwproto. These tests cover what the codec adds: WriteRequests go
// through it, decoded from the codec's own copy of the message.

func TestCodecUnmarshalWriteRequest(t *testing.T) {
	want := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels:     []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}},
			Samples:    []prompb.Sample{{Value: 1, Timestamp: 2}},
			Exemplars:  []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "t"}}, Value: 3, Timestamp: 4}},
			Histograms: []prompb.Histogram{prompb.FromIntHistogram(5, &histogram.Histogram{Count: 1, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}})},
		}},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "h", Unit: "u"}},
	}
	b, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got prompb.WriteRequest
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatal(err)
	}
	gb, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, gb) {
		t.Fatalf("decoded %v, want %v", got.String(), want.String())
	}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-1])}, &got); err == nil {
		t.Fatal("truncated request accepted")
	}
}

func TestUnmarshalWriteRequestSlicesAreIndependent(t *testing.T) {
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "a", Value: "1"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "b", Value: "2"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}},
	}}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var got prompb.WriteRequest
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil {
		t.Fatal(err)
	}
	// Appending to one series must not overwrite the next (full slice expressions).
	got.Timeseries[0].Labels = append(got.Timeseries[0].Labels, prompb.Label{Name: "x", Value: "y"})
	got.Timeseries[0].Samples = append(got.Timeseries[0].Samples, prompb.Sample{Value: 9})
	if got.Timeseries[1].Labels[0].Name != "b" || got.Timeseries[1].Samples[0].Value != 2 {
		t.Fatalf("series 1 corrupted: %v", got.Timeseries[1])
	}
	// The codec decodes from its own copy: changing the wire buffer changes nothing.
	for i := range b {
		b[i] = 0
	}
	if got.Timeseries[1].Labels[0].Value != "2" {
		t.Fatalf("decoded strings alias the caller's buffer")
	}
}
