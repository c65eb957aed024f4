package client

import (
	"bytes"
	"math"
	"math/rand"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/mem"
)

func randomWriteRequest(r *rand.Rand) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for s := 0; s < r.Intn(20); s++ {
		var ts prompb.TimeSeries
		for l := 0; l < r.Intn(8); l++ {
			ts.Labels = append(ts.Labels, prompb.Label{Name: "l" + strconv.Itoa(l), Value: strconv.Itoa(r.Intn(1000))})
		}
		if r.Intn(4) == 0 {
			ts.Labels = append(ts.Labels, prompb.Label{Name: "", Value: ""}) // empty strings
		}
		for i := 0; i < r.Intn(5); i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: r.Int63() - r.Int63(), Value: r.NormFloat64()})
		}
		if r.Intn(3) == 0 {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: 0, Value: math.Inf(-1)})
		}
		for i := 0; i < r.Intn(3); i++ {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{
				Labels: []prompb.Label{{Name: "trace_id", Value: strconv.FormatUint(r.Uint64(), 16)}},
				Value:  r.Float64(), Timestamp: r.Int63(),
			})
		}
		if r.Intn(3) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(r.Int63(), &histogram.Histogram{
				Count: 3, Sum: 1.5, Schema: 1, PositiveSpans: []histogram.Span{{Offset: 1, Length: 2}}, PositiveBuckets: []int64{1, 1},
			}))
		}
		if r.Intn(4) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(r.Int63(), &histogram.FloatHistogram{
				Count: 2.5, Sum: 1, Schema: 0, NegativeSpans: []histogram.Span{{Offset: -2, Length: 1}}, NegativeBuckets: []float64{2.5},
			}))
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	if r.Intn(2) == 0 {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "m", Help: "h", Unit: "u"})
	}
	return req
}

// stripUnknown clears what gogo keeps and the fast decoder skips, so re-marshalled
// results can be compared byte for byte.
func stripUnknown(req *prompb.WriteRequest) {
	req.XXX_unrecognized = nil
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		ts.XXX_unrecognized = nil
		for j := range ts.Labels {
			ts.Labels[j].XXX_unrecognized = nil
		}
		for j := range ts.Samples {
			ts.Samples[j].XXX_unrecognized = nil
		}
		for j := range ts.Exemplars {
			ts.Exemplars[j].XXX_unrecognized = nil
			for k := range ts.Exemplars[j].Labels {
				ts.Exemplars[j].Labels[k].XXX_unrecognized = nil
			}
		}
	}
}

// checkSameAsGogo decodes b with both decoders: when both accept the input they must
// produce the same message; with valid set, both must accept it. On malformed input the
// two may disagree about acceptance (gogo tolerates overlong varints, the fast decoder
// skips mistyped fields), which is fine as long as neither panics nor hangs.
func checkSameAsGogo(t *testing.T, b []byte, valid bool) {
	t.Helper()
	var want prompb.WriteRequest
	gogoErr := want.Unmarshal(b)
	var got prompb.WriteRequest
	err := unmarshalWriteRequest(b, &got)
	if valid && (gogoErr != nil || err != nil) {
		t.Fatalf("valid request not decoded: gogo %v, fast %v", gogoErr, err)
	}
	if gogoErr != nil || err != nil {
		return
	}
	stripUnknown(&want)
	wb, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	gb, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wb, gb) {
		t.Fatalf("decoders disagree:\n gogo %v\n fast %v", want.String(), got.String())
	}
}

func TestUnmarshalWriteRequestMatchesGogo(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		b, err := randomWriteRequest(r).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		checkSameAsGogo(t, b, true)
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

func FuzzUnmarshalWriteRequest(f *testing.F) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 20; i++ {
		b, err := randomWriteRequest(r).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}) // series with an empty label
	f.Add([]byte{0x0a, 0x03, 0x12, 0x01}) // truncated sample
	f.Add([]byte{0x08, 0x01, 0x0a, 0x00}) // mistyped field 1
	f.Add([]byte{0x0a, 0x04, 0x0a, 0x02, 0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSameAsGogo(t, b, false)
	})
}

// TestUnmarshalWriteRequestMutations flips, truncates and inserts bytes in valid
// requests: deterministic fuzzing that runs with every go test.
func TestUnmarshalWriteRequestMutations(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 3000; i++ {
		b, err := randomWriteRequest(r).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			continue
		}
		switch r.Intn(3) {
		case 0:
			b[r.Intn(len(b))] ^= byte(1 << r.Intn(8))
		case 1:
			b = b[:r.Intn(len(b))]
		case 2:
			p := r.Intn(len(b))
			b = append(b[:p:p], append([]byte{byte(r.Intn(256))}, b[p:]...)...)
		}
		checkSameAsGogo(t, b, false)
	}
}

// TestUnmarshalWriteRequestAcrossChunks makes series straddle the decoder's 1024-entry
// chunks of labels and samples.
func TestUnmarshalWriteRequestAcrossChunks(t *testing.T) {
	req := &prompb.WriteRequest{}
	for s := 0; s < 700; s++ {
		var ts prompb.TimeSeries
		for l := 0; l < 3+s%5; l++ {
			ts.Labels = append(ts.Labels, prompb.Label{Name: "n" + strconv.Itoa(l), Value: strconv.Itoa(s)})
		}
		for i := 0; i < 1+s%7; i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: int64(s*10 + i), Value: float64(i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	checkSameAsGogo(t, b, true)
}
