package querier

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"google.golang.org/grpc/mem"
)

type decodedSeries struct {
	lset   labels.Labels
	chunks []rawChunk
}

// decodeVia feeds messages to a decoder the way one of its callers does.
type decodeVia func(d *seriesResponseDecoder, msg []byte) error

var decodePaths = map[string]decodeVia{
	"bytes": func(d *seriesResponseDecoder, msg []byte) error { return d.Unmarshal(msg) },
	// gRPC hands over the message in pieces (one per HTTP/2 frame) and recycles them.
	"grpc buffers": func(d *seriesResponseDecoder, msg []byte) error {
		mid := len(msg) / 2
		a, b := append([]byte(nil), msg[:mid]...), append([]byte(nil), msg[mid:]...)
		err := d.UnmarshalBuffers(mem.BufferSlice{mem.SliceBuffer(a), mem.SliceBuffer(b)})
		clear(a)
		clear(b)
		return err
	},
	// An in-process ingester hands over objects whose memory it reuses afterwards.
	"in-process object": func(d *seriesResponseDecoder, msg []byte) error {
		var r storepb.SeriesResponse
		if err := r.Unmarshal(bytes.Clone(msg)); err != nil {
			return errString("test setup: " + err.Error())
		}
		err := d.ConsumeSeriesResponse(&r)
		all := []*storepb.Series{r.GetSeries()}
		if b := r.GetBatch(); b != nil {
			all = append(all, b.Series...)
		}
		for _, s := range all {
			if s == nil {
				continue
			}
			for _, c := range s.Chunks {
				if c.Raw != nil {
					clear(c.Raw.Data)
				}
			}
		}
		return err
	},
}

func decodeAll(t testing.TB, msgs ...[]byte) ([]decodedSeries, []string, error) {
	t.Helper()
	return decodeAllVia(decodePaths["bytes"], msgs...)
}

func decodeAllVia(via decodeVia, msgs ...[]byte) ([]decodedSeries, []string, error) {
	var out []decodedSeries
	dec := &seriesResponseDecoder{onSeries: func(lset labels.Labels, chunks []rawChunk) error {
		out = append(out, decodedSeries{lset: lset, chunks: append([]rawChunk(nil), chunks...)})
		return nil
	}}
	for _, m := range msgs {
		if err := via(dec, m); err != nil {
			return out, dec.warnings, err
		}
	}
	return out, dec.warnings, nil
}

func marshalResponse(t testing.TB, r *storepb.SeriesResponse) []byte {
	t.Helper()
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pbSeries(lset labels.Labels, chunks ...storepb.AggrChunk) *storepb.Series {
	return &storepb.Series{Labels: client.ZLabelsFromPromLabels(lset), Chunks: chunks}
}

func pbChunk(mint, maxt int64, enc storepb.Chunk_Encoding, data string) storepb.AggrChunk {
	return storepb.AggrChunk{MinTime: mint, MaxTime: maxt, Raw: &storepb.Chunk{Type: enc, Data: []byte(data), Hash: 42}}
}

// The decoder must read exactly what the generated code writes: single series, batches
// and warnings, every chunk encoding, negative timestamps.
func TestSeriesResponseDecoder(t *testing.T) {
	a := labels.FromStrings("__name__", "up", "job", "api")
	b := labels.FromStrings("__name__", "up", "job", "db", "zone", "")
	msgs := [][]byte{
		marshalResponse(t, storepb.NewSeriesResponse(pbSeries(a, pbChunk(-5, 10, storepb.Chunk_XOR, "x1"), pbChunk(11, 20, storepb.Chunk_HISTOGRAM, "h")))),
		marshalResponse(t, storepb.NewWarnSeriesResponse(errString("store is slow"))),
		marshalResponse(t, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: []*storepb.Series{
			pbSeries(b, pbChunk(1, 2, storepb.Chunk_FLOAT_HISTOGRAM, "fh")),
			pbSeries(a),
		}}}}),
	}
	for name, via := range decodePaths {
		t.Run(name, func(t *testing.T) {
			got, warns, err := decodeAllVia(via, msgs...)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoded(t, got, warns)
		})
	}
}

func checkDecoded(t *testing.T, got []decodedSeries, warns []string) {
	t.Helper()
	a := labels.FromStrings("__name__", "up", "job", "api")
	if len(warns) != 1 || warns[0] != "store is slow" {
		t.Errorf("warnings = %q", warns)
	}
	if len(got) != 3 {
		t.Fatalf("decoded %d series, want 3", len(got))
	}
	if !labels.Equal(got[0].lset, a) || !labels.Equal(got[1].lset, labels.FromStrings("__name__", "up", "job", "db")) || !labels.Equal(got[2].lset, a) {
		t.Errorf("labels = %v, %v, %v", got[0].lset, got[1].lset, got[2].lset)
	}
	c := got[0].chunks
	if len(c) != 2 || c[0].mint != -5 || c[0].maxt != 10 || string(c[0].data) != "x1" || c[0].enc.String() != "XOR" ||
		c[1].enc.String() != "histogram" || string(c[1].data) != "h" {
		t.Errorf("chunks of first series = %+v", c)
	}
	if c := got[1].chunks; len(c) != 1 || c[0].enc.String() != "floathistogram" || string(c[0].data) != "fh" {
		t.Errorf("chunks of second series = %+v", c)
	}
	if len(got[2].chunks) != 0 {
		t.Errorf("series without chunks decoded %d chunks", len(got[2].chunks))
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestSeriesResponseDecoder_Errors(t *testing.T) {
	lset := labels.FromStrings("__name__", "m")
	for name, tc := range map[string]struct {
		msg  []byte
		want string
	}{
		"downsampled chunk": {
			msg:  marshalResponse(t, storepb.NewSeriesResponse(pbSeries(lset, storepb.AggrChunk{MinTime: 1, MaxTime: 2}))),
			want: "no raw data",
		},
		"unknown encoding": {
			msg:  marshalResponse(t, storepb.NewSeriesResponse(pbSeries(lset, pbChunk(1, 2, storepb.Chunk_Encoding(77), "x")))),
			want: "unsupported StoreAPI chunk type",
		},
		"truncated": {
			msg:  marshalResponse(t, storepb.NewSeriesResponse(pbSeries(lset, pbChunk(1, 2, storepb.Chunk_XOR, "xyz"))))[:9],
			want: "decode",
		},
	} {
		for path, via := range decodePaths {
			if name == "truncated" && path == "in-process object" {
				continue // objects cannot be truncated
			}
			t.Run(name+"/"+path, func(t *testing.T) {
				_, _, err := decodeAllVia(via, tc.msg)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.want)
				}
			})
		}
	}
}

// A limit hit while decoding stops the stream and keeps the limit error itself, which gRPC
// would otherwise flatten into a status message.
func TestSeriesResponseDecoder_StopsOnCallbackError(t *testing.T) {
	stop := &limitError{msg: "too many"}
	dec := &seriesResponseDecoder{onSeries: func(labels.Labels, []rawChunk) error { return stop }}
	err := dec.Unmarshal(marshalResponse(t, storepb.NewSeriesResponse(pbSeries(labels.FromStrings("a", "b")))))
	if err == nil || dec.stopErr != stop {
		t.Fatalf("err = %v, stopErr = %v", err, dec.stopErr)
	}
}

// FuzzSeriesResponseDecoder feeds arbitrary bytes (the decoder reads what a remote
// ingester or store-gateway sends). It must never panic, and whenever both it and the
// generated code accept a message they must agree on every series and chunk.
func FuzzSeriesResponseDecoder(f *testing.F) {
	lset := labels.FromStrings("__name__", "up", "job", "api")
	f.Add(marshalResponse(f, storepb.NewSeriesResponse(pbSeries(lset, pbChunk(1, 2, storepb.Chunk_XOR, "abc")))))
	f.Add(marshalResponse(f, storepb.NewWarnSeriesResponse(errString("w"))))
	f.Add(marshalResponse(f, &storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: []*storepb.Series{pbSeries(lset), pbSeries(lset, pbChunk(3, 4, storepb.Chunk_HISTOGRAM, "d"))}}}}))
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, msg []byte) {
		got, _, err := decodeAll(t, msg)
		if err != nil {
			return
		}
		var ref storepb.SeriesResponse
		if ref.Unmarshal(msg) != nil {
			return
		}
		var want []*storepb.Series
		if s := ref.GetSeries(); s != nil {
			want = append(want, s)
		}
		if b := ref.GetBatch(); b != nil {
			want = append(want, b.Series...)
		}
		if ref.GetSeries() != nil && ref.GetBatch() != nil {
			return // a oneof set twice: the generated code keeps the last, the decoder reads both
		}
		if len(got) != len(want) {
			// Repeated oneof fields are merged by the generated code and read one by one here.
			return
		}
		for i, w := range want {
			if len(got[i].chunks) != len(w.Chunks) {
				t.Fatalf("series %d: %d chunks, generated code %d", i, len(got[i].chunks), len(w.Chunks))
			}
			for j, c := range w.Chunks {
				g := got[i].chunks[j]
				if g.mint != c.MinTime || g.maxt != c.MaxTime || !bytes.Equal(g.data, c.Raw.Data) {
					t.Fatalf("series %d chunk %d: %+v, generated code %+v", i, j, g, c)
				}
			}
		}
	})
}
