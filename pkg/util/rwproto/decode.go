// Package rwproto decodes Prometheus remote write 1.0 requests
// (prompb.WriteRequest) without copying label strings. The distributor's HTTP
// write path and the ingester's gRPC codec both receive this message on their
// hot paths; they share this one decoder.
package rwproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
)

// Unmarshal decodes a remote write 1.0 request into req. It is Decoder.Unmarshal
// with fresh memory, for callers that do not keep arrays across requests.
func Unmarshal(buf []byte, req *prompb.WriteRequest) error {
	var d Decoder
	return d.Unmarshal(buf, req)
}

// Decoder holds the arrays that the labels and samples of decoded series live
// in. Kept across requests (see Reset), it spares allocating them per request.
// The zero value is ready to use; a Decoder must not be used concurrently.
type Decoder struct {
	labels  []prompb.Label
	samples []prompb.Sample
}

// Reset makes the decoder's arrays reusable for the next request. Requests
// decoded before must no longer be in use: their labels and samples are
// overwritten. The arrays are cleared so that, idle, they pin no request body.
// Only their used part needs it: append writes nothing beyond.
func (d *Decoder) Reset() {
	clear(d.labels)
	d.labels = d.labels[:0]
	clear(d.samples)
	d.samples = d.samples[:0]
}

// Unmarshal decodes buf into req like (*prompb.WriteRequest).Unmarshal, and
// accepts exactly the inputs that one accepts, but several times cheaper:
//
//   - Label names and values of series and exemplars are strings that alias buf
//     instead of copies: they are most of a request's bytes and would be about
//     fifteen allocations per series.
//   - The labels and samples of all series share two arrays, sized exactly up
//     front, as is req.Timeseries. Each series' slices are cut with full slice
//     expressions, so appending to one reallocates instead of overwriting the
//     next series.
//
// Unknown fields are kept in XXX_unrecognized, copied, as gogo does: apart
// from the aliasing, req holds exactly what prompb's Unmarshal would produce.
// Remote write senders send none, so this costs nothing in practice.
//
// Aliasing contract: buf must stay unmodified while req, or anything taken from
// its labels without copying, is in use. Whatever outlives the request must be
// copied (the ingester's TSDB copies the labels of new series, the ingester
// clones metadata it keeps). Callers satisfy this by decoding from a buffer of
// their own that nothing else writes to.
//
// req is overwritten, not merged into as gogo does; only the backing array of
// req.Timeseries is reused when it is large enough. Metadata and histograms are
// decoded by their gogo methods: they are rare, carry no label strings, and
// histograms are intricate.
func (d *Decoder) Unmarshal(buf []byte, req *prompb.WriteRequest) error {
	series, labels, samples := count(buf)
	ts := req.Timeseries[:0]
	*req = prompb.WriteRequest{}
	if series > 0 {
		if cap(ts) < series {
			ts = make([]prompb.TimeSeries, 0, series)
		}
		req.Timeseries = ts
	}
	// Counts of malformed input may fall short; append then still works (it
	// copies what the current series holds so far), and decoding fails anyway.
	if cap(d.labels)-len(d.labels) < labels {
		d.labels = make([]prompb.Label, 0, labels)
	}
	if cap(d.samples)-len(d.samples) < samples {
		d.samples = make([]prompb.Sample, 0, samples)
	}
	for b := buf; len(b) > 0; {
		num, typ, n := tag(b)
		if n < 0 {
			return fmt.Errorf("write request: %w", wireError(n))
		}
		if num != 1 && num != 3 {
			if n = skip(b); n < 0 {
				return fmt.Errorf("write request field %d: %w", num, wireError(n))
			}
			req.XXX_unrecognized = append(req.XXX_unrecognized, b[:n]...)
			b = b[n:]
			continue
		}
		v, m := field(b[n:], typ)
		if m < 0 {
			return fmt.Errorf("write request field %d: %w", num, wireError(m))
		}
		b = b[n+m:]
		if num == 1 {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{})
			if err := d.series(v, &req.Timeseries[len(req.Timeseries)-1]); err != nil {
				return fmt.Errorf("write request series %d: %w", len(req.Timeseries)-1, err)
			}
			continue
		}
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{})
		if err := req.Metadata[len(req.Metadata)-1].Unmarshal(v); err != nil {
			return fmt.Errorf("write request metadata %d: %w", len(req.Metadata)-1, err)
		}
	}
	return nil
}

// count returns how many series buf holds and how many labels and samples
// they hold in all, so that Unmarshal allocates each array once. It walks only
// tags and lengths. Malformed input yields partial counts; Unmarshal reports
// the error.
func count(buf []byte) (series, labels, samples int) {
	for len(buf) > 0 {
		num, typ, n := tag(buf)
		if n < 0 {
			return
		}
		if num != 1 || typ != bytesType {
			if n = skip(buf); n < 0 {
				return
			}
			buf = buf[n:]
			continue
		}
		v, m := field(buf[n:], typ)
		if m < 0 {
			return
		}
		buf = buf[n+m:]
		series++
		for len(v) > 0 {
			num, typ, n := tag(v)
			if n < 0 {
				return
			}
			if (num != 1 && num != 2) || typ != bytesType {
				if n = skip(v); n < 0 {
					return
				}
				v = v[n:]
				continue
			}
			_, m := field(v[n:], typ)
			if m < 0 {
				return
			}
			v = v[n+m:]
			if num == 1 {
				labels++
			} else {
				samples++
			}
		}
	}
	return
}

func (d *Decoder) series(b []byte, ts *prompb.TimeSeries) error {
	// Labels and samples go to the end of the shared arrays and are cut out at
	// the end. Should append reallocate (see Unmarshal), indexes stay valid.
	lFrom, sFrom := len(d.labels), len(d.samples)
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return wireError(n)
		}
		if num < 1 || num > 4 {
			if n = skip(b); n < 0 {
				return fmt.Errorf("field %d: %w", num, wireError(n))
			}
			ts.XXX_unrecognized = append(ts.XXX_unrecognized, b[:n]...)
			b = b[n:]
			continue
		}
		v, m := field(b[n:], typ)
		if m < 0 {
			return fmt.Errorf("field %d: %w", num, wireError(m))
		}
		b = b[n+m:]
		switch num {
		case 1:
			d.labels = append(d.labels, prompb.Label{})
			if err := label(v, &d.labels[len(d.labels)-1]); err != nil {
				return fmt.Errorf("label %d: %w", len(d.labels)-1-lFrom, err)
			}
		case 2:
			d.samples = append(d.samples, prompb.Sample{})
			if err := sample(v, &d.samples[len(d.samples)-1]); err != nil {
				return fmt.Errorf("sample %d: %w", len(d.samples)-1-sFrom, err)
			}
		case 3:
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{})
			if err := exemplar(v, &ts.Exemplars[len(ts.Exemplars)-1]); err != nil {
				return fmt.Errorf("exemplar %d: %w", len(ts.Exemplars)-1, err)
			}
		case 4:
			ts.Histograms = append(ts.Histograms, prompb.Histogram{})
			if err := ts.Histograms[len(ts.Histograms)-1].Unmarshal(v); err != nil {
				return fmt.Errorf("histogram %d: %w", len(ts.Histograms)-1, err)
			}
		}
	}
	if end := len(d.labels); end > lFrom {
		ts.Labels = d.labels[lFrom:end:end]
	}
	if end := len(d.samples); end > sFrom {
		ts.Samples = d.samples[sFrom:end:end]
	}
	return nil
}

// label decodes a label into l, its name and value aliasing b.
func label(b []byte, l *prompb.Label) error {
	// Fast path for what every encoder sends: name then value, each shorter
	// than 128 bytes. Labels are most of what a request holds.
	if len(b) >= 4 && b[0] == 1<<3|bytesType {
		if n := int(b[1]); n < 0x80 && n+4 <= len(b) && b[n+2] == 2<<3|bytesType {
			if v := int(b[n+3]); v < 0x80 && n+4+v == len(b) {
				l.Name, l.Value = yoloString(b[2:2+n]), yoloString(b[n+4:])
				return nil
			}
		}
	}
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return wireError(n)
		}
		if num != 1 && num != 2 {
			if n = skip(b); n < 0 {
				return fmt.Errorf("field %d: %w", num, wireError(n))
			}
			l.XXX_unrecognized = append(l.XXX_unrecognized, b[:n]...)
			b = b[n:]
			continue
		}
		v, m := field(b[n:], typ)
		if m < 0 {
			return fmt.Errorf("field %d: %w", num, wireError(m))
		}
		b = b[n+m:]
		if num == 1 {
			l.Name = yoloString(v)
		} else {
			l.Value = yoloString(v)
		}
	}
	return nil
}

func sample(b []byte, s *prompb.Sample) error {
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return wireError(n)
		}
		switch num {
		case 1:
			if typ != fixed64Type {
				return fmt.Errorf("value: %w", wireError(errWireType))
			}
			v, m := fixed64(b[n:])
			if m < 0 {
				return fmt.Errorf("value: %w", wireError(m))
			}
			s.Value, b = math.Float64frombits(v), b[n+m:]
		case 2:
			if typ != varintType {
				return fmt.Errorf("timestamp: %w", wireError(errWireType))
			}
			v, m := varint(b[n:])
			if m < 0 {
				return fmt.Errorf("timestamp: %w", wireError(m))
			}
			s.Timestamp, b = int64(v), b[n+m:]
		default:
			if n = skip(b); n < 0 {
				return fmt.Errorf("field %d: %w", num, wireError(n))
			}
			s.XXX_unrecognized = append(s.XXX_unrecognized, b[:n]...)
			b = b[n:]
		}
	}
	return nil
}

func exemplar(b []byte, e *prompb.Exemplar) error {
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return wireError(n)
		}
		switch num {
		case 1:
			v, m := field(b[n:], typ)
			if m < 0 {
				return fmt.Errorf("labels: %w", wireError(m))
			}
			b = b[n+m:]
			e.Labels = append(e.Labels, prompb.Label{})
			if err := label(v, &e.Labels[len(e.Labels)-1]); err != nil {
				return fmt.Errorf("label %d: %w", len(e.Labels)-1, err)
			}
		case 2:
			if typ != fixed64Type {
				return fmt.Errorf("value: %w", wireError(errWireType))
			}
			v, m := fixed64(b[n:])
			if m < 0 {
				return fmt.Errorf("value: %w", wireError(m))
			}
			e.Value, b = math.Float64frombits(v), b[n+m:]
		case 3:
			if typ != varintType {
				return fmt.Errorf("timestamp: %w", wireError(errWireType))
			}
			v, m := varint(b[n:])
			if m < 0 {
				return fmt.Errorf("timestamp: %w", wireError(m))
			}
			e.Timestamp, b = int64(v), b[n+m:]
		default:
			if n = skip(b); n < 0 {
				return fmt.Errorf("field %d: %w", num, wireError(n))
			}
			e.XXX_unrecognized = append(e.XXX_unrecognized, b[:n]...)
			b = b[n:]
		}
	}
	return nil
}

// yoloString views b as a string without copying; see Decoder.Unmarshal for
// the lifetime rule.
func yoloString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// The wire primitives below reproduce what gogo-generated code (which
// prompb's Unmarshal methods are) accepts, quirks included, rather than
// google.golang.org/protobuf/encoding/protowire's stricter rules: varints of
// ten bytes whose top bits overflow are accepted, field numbers are the tag's
// bits above the wire type truncated to int32, and groups are skipped by
// nesting depth without matching field numbers. That way this decoder and
// prompb's accept the same inputs, which the differential tests rely on.

// Wire types.
const (
	varintType     = 0
	fixed64Type    = 1
	bytesType      = 2
	startGroupType = 3
	endGroupType   = 4
	fixed32Type    = 5
)

// Error codes of the wire primitives, which return them instead of a length.
const (
	errTruncated = -1 - iota
	errOverflow
	errNegativeLength
	errWireType
	errEndGroup
	errFieldNumber
)

func wireError(code int) error {
	switch code {
	case errTruncated:
		return io.ErrUnexpectedEOF
	case errOverflow:
		return errors.New("varint longer than 10 bytes")
	case errNegativeLength:
		return errors.New("negative length")
	case errWireType:
		return errors.New("wrong wire type")
	case errEndGroup:
		return errors.New("end group outside a group")
	case errFieldNumber:
		return errors.New("illegal field number")
	}
	return fmt.Errorf("malformed protobuf (code %d)", code)
}

// varint decodes a base-128 varint of at most ten bytes; bits beyond the 64th
// are dropped, as gogo does.
func varint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	var v uint64
	for i := 0; i < 10; i++ {
		if i >= len(b) {
			return 0, errTruncated
		}
		c := b[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, errOverflow
}

// tag decodes a field tag. Field numbers that are not positive and end-group
// tags are errors, as everywhere in gogo-generated message code.
func tag(b []byte) (num int32, typ int, n int) {
	v, n := varint(b)
	if n < 0 {
		return 0, 0, n
	}
	num, typ = int32(v>>3), int(v&7)
	if typ == endGroupType {
		return num, typ, errEndGroup
	}
	if num <= 0 {
		return num, typ, errFieldNumber
	}
	return num, typ, n
}

// field decodes the value of a length-delimited field of wire type typ at the
// start of b: the bytes and the length consumed.
func field(b []byte, typ int) ([]byte, int) {
	if typ != bytesType {
		return nil, errWireType
	}
	l, n := varint(b)
	if n < 0 {
		return nil, n
	}
	if int(l) < 0 {
		return nil, errNegativeLength
	}
	if int(l) > len(b)-n {
		return nil, errTruncated
	}
	return b[n : n+int(l)], n + int(l)
}

func fixed64(b []byte) (uint64, int) {
	if len(b) < 8 {
		return 0, errTruncated
	}
	return binary.LittleEndian.Uint64(b), 8
}

// skip returns the length of the field starting at b, tag included, or an
// error code. It follows gogo's skipTypes: nested groups are counted by depth,
// and tags within a group are not checked.
func skip(b []byte) int {
	i, depth := 0, 0
	for i < len(b) {
		v, n := varint(b[i:])
		if n < 0 {
			return n
		}
		i += n
		switch v & 7 {
		case varintType:
			_, n := varint(b[i:])
			if n < 0 {
				return n
			}
			i += n
		case fixed64Type:
			i += 8
		case bytesType:
			l, n := varint(b[i:])
			if n < 0 {
				return n
			}
			if int(l) < 0 {
				return errNegativeLength
			}
			if int(l) > len(b)-i-n {
				return errTruncated
			}
			i += n + int(l)
		case startGroupType:
			depth++
		case endGroupType:
			if depth == 0 {
				return errEndGroup
			}
			depth--
		case fixed32Type:
			i += 4
		default:
			return errWireType
		}
		if depth == 0 {
			if i > len(b) {
				return errTruncated
			}
			return i
		}
	}
	return errTruncated
}
