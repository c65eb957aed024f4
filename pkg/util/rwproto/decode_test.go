package rwproto

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
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
			e := prompb.Exemplar{Value: r.Float64(), Timestamp: r.Int63() - r.Int63()}
			for j := 0; j < r.Intn(3); j++ {
				e.Labels = append(e.Labels, prompb.Label{Name: "trace_id" + strconv.Itoa(j), Value: strconv.FormatUint(r.Uint64(), 16)})
			}
			ts.Exemplars = append(ts.Exemplars, e)
		}
		if r.Intn(3) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(r.Int63(), &histogram.Histogram{
				Count: 3, Sum: 1.5, Schema: 1, ZeroThreshold: 0.001, ZeroCount: 1,
				PositiveSpans: []histogram.Span{{Offset: 1, Length: 2}}, PositiveBuckets: []int64{1, 1},
				NegativeSpans: []histogram.Span{{Offset: -1, Length: 1}}, NegativeBuckets: []int64{1},
			}))
		}
		if r.Intn(4) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(r.Int63(), &histogram.FloatHistogram{
				CounterResetHint: histogram.GaugeType, Count: 2.5, Sum: 1, Schema: 0,
				NegativeSpans: []histogram.Span{{Offset: -2, Length: 1}}, NegativeBuckets: []float64{2.5},
			}))
		}
		if r.Intn(8) == 0 {
			ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(r.Int63(), &histogram.FloatHistogram{
				Schema: histogram.CustomBucketsSchema, Count: 1, Sum: 0.5,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{1}, CustomValues: []float64{1},
			}))
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	for i := 0; i < r.Intn(3); i++ {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			Type: prompb.MetricMetadata_MetricType(r.Intn(8)), MetricFamilyName: "m" + strconv.Itoa(i), Help: "h", Unit: "u",
		})
	}
	return req
}

func marshal(tb testing.TB, req *prompb.WriteRequest) []byte {
	tb.Helper()
	b, err := req.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkSameAsGogo decodes b with prompb's generated decoder, with Unmarshal and
// with a Decoder that already holds another request: all must accept the same
// inputs, and produce the same messages on every field, unknown fields kept in
// XXX_unrecognized included.
func checkSameAsGogo(t *testing.T, b []byte, valid bool) {
	t.Helper()
	var want prompb.WriteRequest
	gogoErr := want.Unmarshal(b)
	if valid && gogoErr != nil {
		t.Fatalf("valid request refused by gogo: %v", gogoErr)
	}

	var got prompb.WriteRequest
	err := Unmarshal(b, &got)
	if (err == nil) != (gogoErr == nil) {
		t.Fatalf("decoders disagree on acceptance: gogo %v, fast %v (input %x)", gogoErr, err, b)
	}

	// Reused memory: a decoder holding an earlier request, and a request whose
	// Timeseries array is reused.
	var d Decoder
	prev := prompb.WriteRequest{}
	if err := d.Unmarshal(marshal(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "old", Value: "x"}}, Samples: []prompb.Sample{{Value: 1}}},
	}}), &prev); err != nil {
		t.Fatal(err)
	}
	d.Reset()
	reused := prompb.WriteRequest{Timeseries: prev.Timeseries[:0], Metadata: []prompb.MetricMetadata{{Help: "stale"}}}
	err2 := d.Unmarshal(b, &reused)
	if (err2 == nil) != (gogoErr == nil) {
		t.Fatalf("reused decoder disagrees on acceptance: gogo %v, fast %v", gogoErr, err2)
	}
	if gogoErr != nil {
		return
	}
	wb := marshal(t, &want)
	for _, g := range []*prompb.WriteRequest{&got, &reused} {
		// Marshalled bytes cover every field, XXX_unrecognized included, and
		// compare NaN samples equal.
		if gb := marshal(t, g); !bytes.Equal(wb, gb) {
			t.Fatalf("decoders disagree:\n gogo %v\n fast %v", want.String(), g.String())
		}
	}
}

func TestUnmarshalMatchesGogo(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		checkSameAsGogo(t, marshal(t, randomWriteRequest(r)), true)
	}
	checkSameAsGogo(t, nil, true)
}

// msg builds a protobuf message from fields appended by fns.
func msg(fns ...func([]byte) []byte) []byte {
	var b []byte
	for _, f := range fns {
		b = f(b)
	}
	return b
}

func bytesField(num protowire.Number, v []byte) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
}

func varintField(num protowire.Number, v uint64) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
}

func fixed64Field(num protowire.Number, v uint64) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), v)
	}
}

func raw(r ...byte) func([]byte) []byte {
	return func(b []byte) []byte { return append(b, r...) }
}

// unknown is a set of unknown fields of every wire type, a nested group
// included.
func unknown() func([]byte) []byte {
	return func(b []byte) []byte {
		b = protowire.AppendTag(b, 100, protowire.VarintType)
		b = protowire.AppendVarint(b, 1<<40)
		b = protowire.AppendTag(b, 101, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, 7)
		b = protowire.AppendTag(b, 102, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, 7)
		b = protowire.AppendTag(b, 103, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("junk"))
		b = protowire.AppendTag(b, 104, protowire.StartGroupType)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 5)
		b = protowire.AppendTag(b, 105, protowire.StartGroupType)
		b = protowire.AppendTag(b, 105, protowire.EndGroupType)
		b = protowire.AppendTag(b, 999, protowire.EndGroupType) // gogo does not match numbers
		return b
	}
}

func labelMsg(name, value string) []byte {
	return msg(bytesField(1, []byte(name)), bytesField(2, []byte(value)))
}

// TestUnmarshalEdgeCases covers what random requests do not: unknown fields
// at every level, repeated scalar fields, mistyped known fields, and the
// varint and tag quirks of gogo-generated code.
func TestUnmarshalEdgeCases(t *testing.T) {
	overlong := []byte{0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f} // 10 bytes, high bits overflow
	smp := msg(fixed64Field(1, math.Float64bits(2.5)), varintField(2, 42))
	ex := msg(bytesField(1, labelMsg("trace_id", "abc")), fixed64Field(2, math.Float64bits(1)), varintField(3, 7))
	hist := marshal(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Histograms: []prompb.Histogram{
		prompb.FromIntHistogram(5, &histogram.Histogram{Count: 1, Schema: 0, PositiveSpans: []histogram.Span{{Length: 1}}, PositiveBuckets: []int64{1}}),
	}}}})
	md := msg(varintField(1, uint64(prompb.MetricMetadata_GAUGE)), bytesField(2, []byte("m")), bytesField(4, []byte("help")))
	series := func(fields ...func([]byte) []byte) func([]byte) []byte { return bytesField(1, msg(fields...)) }

	for name, c := range map[string]struct {
		b     []byte
		valid bool
	}{
		"unknown fields everywhere": {msg(unknown(),
			series(unknown(),
				bytesField(1, msg(unknown(), bytesField(1, []byte("__name__")), unknown(), bytesField(2, []byte("up")), unknown())),
				bytesField(2, msg(unknown(), raw(smp...), unknown())),
				bytesField(3, msg(unknown(), raw(ex...), unknown(), bytesField(1, msg(unknown(), bytesField(2, []byte("v")))))),
				unknown()),
			unknown(), bytesField(3, md), unknown(), varintField(2, 1)), true},
		"histogram": {hist, true},
		"repeated scalars, last wins": {msg(series(
			bytesField(1, msg(bytesField(1, []byte("a")), bytesField(1, []byte("b")), bytesField(2, []byte("c")))),
			bytesField(2, msg(varintField(2, 1), raw(smp...), varintField(2, 3))),
		)), true},
		"empty series and labels":          {msg(series(), series(bytesField(1, nil), bytesField(2, nil))), true},
		"overlong varint timestamp":        {msg(series(bytesField(2, msg(raw(0x10), raw(overlong...))))), true},
		"overlong varint in unknown field": {msg(raw(0x10), raw(overlong...), series()), true},
		"overlong varint length":           {msg(raw(0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00)), true},
		"varint of 11 bytes":               {msg(series(bytesField(2, msg(raw(0x10), raw(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01))))), false},
		"field number truncated to 1":      {msg(raw(0x8a, 0x80, 0x80, 0x80, 0x80, 0x02), raw(0x00)), true},
		"field number 0":                   {msg(raw(0x02, 0x00)), false},
		"end group at top level":           {msg(raw(0x0c)), false},
		"unmatched group":                  {msg(raw(0x2b, 0x08, 0x01)), false},
		"wire type 6":                      {msg(raw(0x2e)), false},
		"mistyped series":                  {msg(varintField(1, 1)), false},
		"mistyped metadata":                {msg(varintField(3, 1)), false},
		"mistyped label":                   {msg(series(varintField(1, 1))), false},
		"mistyped sample":                  {msg(series(fixed64Field(2, 1))), false},
		"mistyped exemplar":                {msg(series(varintField(3, 1))), false},
		"mistyped histogram":               {msg(series(varintField(4, 1))), false},
		"mistyped label name":              {msg(series(bytesField(1, msg(varintField(1, 1))))), false},
		"mistyped sample value":            {msg(series(bytesField(2, msg(varintField(1, 1))))), false},
		"mistyped sample timestamp":        {msg(series(bytesField(2, msg(fixed64Field(2, 1))))), false},
		"mistyped exemplar labels":         {msg(series(bytesField(3, msg(varintField(1, 1))))), false},
		"mistyped exemplar value":          {msg(series(bytesField(3, msg(varintField(2, 1))))), false},
		"mistyped exemplar timestamp":      {msg(series(bytesField(3, msg(fixed64Field(3, 1))))), false},
		"truncated sample value":           {msg(series(bytesField(2, msg(raw(0x09, 1, 2, 3))))), false},
		"truncated series":                 {msg(raw(0x0a, 0x05, 0x0a)), false},
		"truncated unknown fixed64":        {msg(raw(0x11, 1, 2)), false},
		"truncated fixed64 in group":       {msg(raw(0x13, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x14), raw(0x13, 0x09, 1)), false},
		"huge length":                      {msg(raw(0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), false},
		"huge length in unknown field":     {msg(raw(0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)), false},
		"bad metadata":                     {msg(bytesField(3, raw(0x08)(nil))), false},
		"bad histogram":                    {msg(series(bytesField(4, raw(0x08)(nil)))), false},
	} {
		t.Run(name, func(t *testing.T) {
			checkSameAsGogo(t, c.b, c.valid)
			if !c.valid {
				if err := Unmarshal(c.b, &prompb.WriteRequest{}); err == nil {
					t.Fatal("invalid input accepted")
				}
			}
		})
	}
}

func TestUnmarshalAliasesAndIsolatesSeries(t *testing.T) {
	b := marshal(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "a", Value: "1"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "b", Value: "2"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}},
	}})
	var got prompb.WriteRequest
	if err := Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// Appending to one series must not overwrite the next (full slice expressions).
	got.Timeseries[0].Labels = append(got.Timeseries[0].Labels, prompb.Label{Name: "x", Value: "y"})
	got.Timeseries[0].Samples = append(got.Timeseries[0].Samples, prompb.Sample{Value: 9})
	if got.Timeseries[1].Labels[0].Name != "b" || got.Timeseries[1].Samples[0].Value != 2 {
		t.Fatalf("series 1 corrupted: %v", got.Timeseries[1])
	}
	// Strings alias the input: that is the contract callers must honour.
	i := bytes.IndexByte(b, '2')
	b[i] = '3'
	if got.Timeseries[1].Labels[0].Value != "3" {
		t.Fatalf("label value %q does not alias the input", got.Timeseries[1].Labels[0].Value)
	}
}

// TestDecoderReuse decodes requests of growing and shrinking sizes with one
// decoder, as the distributor does, and checks that requests decoded without
// a Reset in between stay intact.
func TestDecoderReuse(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	var d Decoder
	var tsBuf []prompb.TimeSeries
	for i := 0; i < 50; i++ {
		var live []*prompb.WriteRequest
		var wants [][]byte
		for j := 0; j < 1+i%3; j++ {
			b := marshal(t, randomWriteRequest(r))
			req := &prompb.WriteRequest{Timeseries: tsBuf[:0:0]}
			if j == 0 {
				req.Timeseries = tsBuf[:0]
			}
			if err := d.Unmarshal(b, req); err != nil {
				t.Fatal(err)
			}
			if j == 0 && cap(req.Timeseries) > cap(tsBuf) {
				tsBuf = req.Timeseries[:0]
			}
			live, wants = append(live, req), append(wants, b)
		}
		for j, req := range live {
			if !bytes.Equal(marshal(t, req), wants[j]) {
				t.Fatalf("round %d request %d corrupted by later ones", i, j)
			}
		}
		clear(tsBuf[:cap(tsBuf)])
		d.Reset()
	}
}

// TestUnmarshalAllocations pins the allocation count of the hot path: plain
// series cost three arrays fresh, and nothing once the memory is reused.
func TestUnmarshalAllocations(t *testing.T) {
	b := marshal(t, benchRequest(500))
	fresh := testing.AllocsPerRun(20, func() {
		var req prompb.WriteRequest
		if err := Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
	})
	if fresh > 3 {
		t.Errorf("Unmarshal: %v allocations, want at most 3", fresh)
	}
	var d Decoder
	var req prompb.WriteRequest
	reused := testing.AllocsPerRun(20, func() {
		d.Reset()
		req.Timeseries = req.Timeseries[:0]
		if err := d.Unmarshal(b, &req); err != nil {
			t.Fatal(err)
		}
	})
	if reused != 0 {
		t.Errorf("Decoder.Unmarshal with reused memory: %v allocations, want 0", reused)
	}
}

func FuzzUnmarshal(f *testing.F) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 20; i++ {
		f.Add(marshal(f, randomWriteRequest(r)))
	}
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00}) // series with an empty label
	f.Add([]byte{0x0a, 0x03, 0x12, 0x01}) // truncated sample
	f.Add([]byte{0x08, 0x01, 0x0a, 0x00}) // mistyped field 1
	f.Add([]byte{0x0a, 0x04, 0x0a, 0x02, 0x0a, 0xff})
	f.Add([]byte{0x0a, 0x03, 0x23, 0x08, 0x24}) // group inside a series
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSameAsGogo(t, b, false)
	})
}

// TestUnmarshalMutations flips, truncates and inserts bytes in valid requests:
// deterministic fuzzing that runs with every go test.
func TestUnmarshalMutations(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 3000; i++ {
		b := marshal(t, randomWriteRequest(r))
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

// benchRequest is shaped like a Kubernetes scrape sent by Prometheus: nine
// labels and one sample per series.
func benchRequest(n int) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i := 0; i < n; i++ {
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: "http_requests_total"},
				{Name: "cluster", Value: "prod-eu-west-1"},
				{Name: "container", Value: fmt.Sprintf("app-%d", i%17)},
				{Name: "endpoint", Value: "http-metrics"},
				{Name: "instance", Value: fmt.Sprintf("10.42.%d.%d:8080", (i/250)%256, i%250)},
				{Name: "job", Value: fmt.Sprintf("namespace-%d/app-%d", i%23, i%17)},
				{Name: "namespace", Value: fmt.Sprintf("namespace-%d", i%23)},
				{Name: "pod", Value: fmt.Sprintf("app-%d-7d9f8b6c5-%05d", i%17, i/10)},
				{Name: "service", Value: fmt.Sprintf("app-%d", i%17)},
			},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: 1_700_000_000_000 + int64(i)}},
		})
	}
	return req
}

// BenchmarkUnmarshal decodes a 2000-series request: fresh memory (the
// ingester's codec), reused memory (the distributor), and prompb's generated
// decoder for reference.
func BenchmarkUnmarshal(b *testing.B) {
	buf := marshal(b, benchRequest(2000))
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for i := 0; i < b.N; i++ {
			var req prompb.WriteRequest
			if err := Unmarshal(buf, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		var d Decoder
		var req prompb.WriteRequest
		for i := 0; i < b.N; i++ {
			d.Reset()
			req.Timeseries = req.Timeseries[:0]
			if err := d.Unmarshal(buf, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gogo", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(buf)))
		for i := 0; i < b.N; i++ {
			var req prompb.WriteRequest
			if err := req.Unmarshal(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
