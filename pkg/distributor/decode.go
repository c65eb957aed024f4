package distributor

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

// unmarshalWriteRequestNoCopy decodes a remote write 1.0 request like
// prompb.WriteRequest.Unmarshal, except that label names and values are not
// copied: they point into buf. Label strings are most of a request's bytes
// and allocations, so this roughly halves the decode cost.
//
// buf must not be modified or reused while req (or anything derived from its
// labels without copying) is alive. The remote write path guarantees that by
// decoding into a fresh buffer per request that nothing else references.
func unmarshalWriteRequestNoCopy(buf []byte, req *prompb.WriteRequest) error {
	return unmarshalWriteRequestInto(buf, req, &seriesArena{}, nil)
}

// unmarshalWriteRequestInto is unmarshalWriteRequestNoCopy with the series'
// labels and samples taken from a, and req.Timeseries from tsBuf when it is
// large enough (both possibly reused from an earlier request).
func unmarshalWriteRequestInto(buf []byte, req *prompb.WriteRequest, a *seriesArena, tsBuf []prompb.TimeSeries) error {
	// Size slices exactly up front: growing them by append copies every
	// series several times.
	if n := countBytesFields(buf, 1); n > 0 {
		if cap(tsBuf) >= n {
			req.Timeseries = tsBuf[:0]
		} else {
			req.Timeseries = make([]prompb.TimeSeries, 0, n)
		}
	}
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return fmt.Errorf("WriteRequest: %w", protowire.ParseError(n))
		}
		buf = buf[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			msg, n := protowire.ConsumeBytes(buf)
			if n < 0 {
				return fmt.Errorf("WriteRequest.timeseries: %w", protowire.ParseError(n))
			}
			buf = buf[n:]
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{})
			if err := unmarshalTimeSeriesNoCopy(msg, &req.Timeseries[len(req.Timeseries)-1], a); err != nil {
				return fmt.Errorf("WriteRequest.timeseries[%d]: %w", len(req.Timeseries)-1, err)
			}
		case num == 3 && typ == protowire.BytesType:
			msg, n := protowire.ConsumeBytes(buf)
			if n < 0 {
				return fmt.Errorf("WriteRequest.metadata: %w", protowire.ParseError(n))
			}
			buf = buf[n:]
			req.Metadata = append(req.Metadata, prompb.MetricMetadata{})
			if err := req.Metadata[len(req.Metadata)-1].Unmarshal(msg); err != nil {
				return fmt.Errorf("WriteRequest.metadata: %w", err)
			}
		default:
			n := skipField(num, typ, buf)
			if n < 0 {
				return fmt.Errorf("WriteRequest field %d: %w", num, protowire.ParseError(n))
			}
			buf = buf[n:]
		}
	}
	return nil
}

// seriesArena hands out the label and sample slices of a request's series from
// a few shared backing arrays instead of two allocations per series. Each
// slice is cut with a full slice expression, so appending to one series'
// slice beyond its capacity reallocates instead of reaching into the next.
type seriesArena struct {
	labels  []prompb.Label
	samples []prompb.Sample
	// Totals handed out since the last reset, to size one array for all.
	nLabels, nSamples int
}

const arenaChunk = 4096

// reset makes the arena reusable for another request. Slices handed out
// before must no longer be in use. It keeps one backing array of each kind,
// big enough for the whole previous request, cleared so that it pins nothing.
func (a *seriesArena) reset() {
	if a.nLabels > cap(a.labels) {
		a.labels = make([]prompb.Label, 0, a.nLabels)
	} else {
		clear(a.labels[:cap(a.labels)])
		a.labels = a.labels[:0]
	}
	if a.nSamples > cap(a.samples) {
		a.samples = make([]prompb.Sample, 0, a.nSamples)
	} else {
		a.samples = a.samples[:0]
	}
	a.nLabels, a.nSamples = 0, 0
}

// addLabel appends l to the labels of the series being decoded, which start
// at from in a.labels. When the array is full, the series' labels so far move
// to a new one; the returned from is where they start now.
func (a *seriesArena) addLabel(l prompb.Label, from int) int {
	if len(a.labels) == cap(a.labels) {
		cur := a.labels[from:]
		n := make([]prompb.Label, len(cur), max(arenaChunk, 2*len(cur)))
		copy(n, cur)
		a.labels, from = n, 0
	}
	a.labels = append(a.labels, l)
	a.nLabels++
	return from
}

func (a *seriesArena) addSample(s prompb.Sample, from int) int {
	if len(a.samples) == cap(a.samples) {
		cur := a.samples[from:]
		n := make([]prompb.Sample, len(cur), max(arenaChunk, 2*len(cur)))
		copy(n, cur)
		a.samples, from = n, 0
	}
	a.samples = append(a.samples, s)
	a.nSamples++
	return from
}

func unmarshalTimeSeriesNoCopy(buf []byte, ts *prompb.TimeSeries, a *seriesArena) error {
	// Labels and samples are appended to the arena and cut out at the end
	// with full slice expressions.
	lFrom, sFrom := len(a.labels), len(a.samples)
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return protowire.ParseError(n)
		}
		buf = buf[n:]
		if typ != protowire.BytesType || num < 1 || num > 4 {
			n := skipField(num, typ, buf)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			buf = buf[n:]
			continue
		}
		msg, n := protowire.ConsumeBytes(buf)
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		buf = buf[n:]
		var err error
		switch num {
		case 1:
			var l prompb.Label
			if err = unmarshalLabelNoCopy(msg, &l); err == nil {
				lFrom = a.addLabel(l, lFrom)
			}
		case 2:
			var smp prompb.Sample
			if err = smp.Unmarshal(msg); err == nil {
				sFrom = a.addSample(smp, sFrom)
			}
		case 3:
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{})
			err = ts.Exemplars[len(ts.Exemplars)-1].Unmarshal(msg)
		case 4:
			ts.Histograms = append(ts.Histograms, prompb.Histogram{})
			err = ts.Histograms[len(ts.Histograms)-1].Unmarshal(msg)
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", num, err)
		}
	}
	if end := len(a.labels); end > lFrom {
		ts.Labels = a.labels[lFrom:end:end]
	}
	if end := len(a.samples); end > sFrom {
		ts.Samples = a.samples[sFrom:end:end]
	}
	return nil
}

func unmarshalLabelNoCopy(buf []byte, l *prompb.Label) error {
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return protowire.ParseError(n)
		}
		buf = buf[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			b, n := protowire.ConsumeBytes(buf)
			if n < 0 {
				return fmt.Errorf("label field %d: %w", num, protowire.ParseError(n))
			}
			buf = buf[n:]
			if num == 1 {
				l.Name = yoloString(b)
			} else {
				l.Value = yoloString(b)
			}
			continue
		}
		if (num == 1 || num == 2) && typ != protowire.BytesType {
			return errors.New("label: wrong wire type")
		}
		n = skipField(num, typ, buf)
		if n < 0 {
			return fmt.Errorf("label field %d: %w", num, protowire.ParseError(n))
		}
		buf = buf[n:]
	}
	return nil
}

// countBytesFields counts occurrences of length-delimited field num at the
// top level of buf. Malformed input yields a partial count; the decoder
// reports the error.
func countBytesFields(buf []byte, num protowire.Number) int {
	count := 0
	for len(buf) > 0 {
		n, typ, l := protowire.ConsumeTag(buf)
		if l < 0 {
			return count
		}
		buf = buf[l:]
		l = skipField(n, typ, buf)
		if l < 0 {
			return count
		}
		if n == num && typ == protowire.BytesType {
			count++
		}
		buf = buf[l:]
	}
	return count
}

// skipField skips an unknown field's value the way gogo-generated code does:
// groups are skipped by nesting depth without matching field numbers, so the
// zero-copy decoder accepts exactly what prompb's Unmarshal accepts.
func skipField(num protowire.Number, typ protowire.Type, buf []byte) int {
	if typ != protowire.StartGroupType {
		return protowire.ConsumeFieldValue(num, typ, buf)
	}
	depth, total := 1, 0
	for depth > 0 {
		_, t, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return n
		}
		buf, total = buf[n:], total+n
		switch t {
		case protowire.StartGroupType:
			depth++
		case protowire.EndGroupType:
			depth--
		default:
			m := protowire.ConsumeFieldValue(0, t, buf)
			if m < 0 {
				return m
			}
			buf, total = buf[m:], total+m
		}
	}
	return total
}

// yoloString views b as a string without copying; see
// unmarshalWriteRequestNoCopy for the lifetime rule.
func yoloString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
