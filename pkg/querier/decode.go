package querier

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
)

// Field numbers of the StoreAPI messages the decoder reads (thanos storepb rpc.proto and
// types.proto; these are wire contracts and never change).
const (
	fieldResponseSeries  = 1 // SeriesResponse.series
	fieldResponseWarning = 2 // SeriesResponse.warning
	fieldResponseBatch   = 4 // SeriesResponse.batch
	fieldBatchSeries     = 1 // SeriesBatch.series
	fieldSeriesLabels    = 1 // Series.labels
	fieldSeriesChunks    = 2 // Series.chunks
	fieldLabelName       = 1 // Label.name
	fieldLabelValue      = 2 // Label.value
	fieldAggrMinTime     = 1 // AggrChunk.min_time
	fieldAggrMaxTime     = 2 // AggrChunk.max_time
	fieldAggrRaw         = 3 // AggrChunk.raw
	fieldChunkType       = 1 // Chunk.type
	fieldChunkData       = 2 // Chunk.data
)

// seriesResponseDecoder decodes StoreAPI SeriesResponse messages straight into the
// querier's own structures, without building the generated storepb objects first. A
// 24-hour series arrives as a dozen chunks, and the generated code allocates a Series,
// an AggrChunk slice, a Chunk and a label string per field for each series, all of them
// garbage as soon as the querier has copied what it needs. Here labels go through one
// scratch builder and chunk bytes alias the message buffer, which the codec copied out of
// gRPC's pool for this message alone.
//
// The ingester client codec calls Unmarshal for every received message
// (stream.RecvMsg(decoder)); the decoder reports each series to onSeries and keeps
// warnings for the caller.
type seriesResponseDecoder struct {
	// onSeries receives each decoded series. chunks is reused after it returns; lset is
	// owned by the callee. An error stops decoding and is kept in stopErr, because gRPC
	// turns codec errors into plain status messages.
	onSeries func(lset labels.Labels, chunks []rawChunk) error
	stopErr  error
	warnings []string

	lb     labels.ScratchBuilder
	chunks []rawChunk
	// slabs holds the received bytes that decoded chunks point into.
	slabs slabAllocator
}

var _ client.LocalSeriesConsumer = (*seriesResponseDecoder)(nil)

// UnmarshalBuffers decodes one message as received by gRPC (the codec hands over the
// receive buffers, which gRPC recycles afterwards). The message is copied into a slab
// that lives until the query is closed, instead of into a fresh allocation per message.
func (d *seriesResponseDecoder) UnmarshalBuffers(data mem.BufferSlice) error {
	buf := d.slabs.alloc(data.Len())
	data.CopyTo(buf)
	return d.Unmarshal(buf)
}

// ConsumeSeriesResponse takes a response from an ingester in this process (see
// client.LocalSeriesConsumer). Only chunk bytes are copied, into shared slabs: the
// server reuses its buffers once this returns.
func (d *seriesResponseDecoder) ConsumeSeriesResponse(resp *storepb.SeriesResponse) error {
	switch r := resp.Result.(type) {
	case *storepb.SeriesResponse_Series:
		return d.consumeSeries(r.Series)
	case *storepb.SeriesResponse_Batch:
		for _, s := range r.Batch.Series {
			if err := d.consumeSeries(s); err != nil {
				return err
			}
		}
	case *storepb.SeriesResponse_Warning:
		d.warnings = append(d.warnings, r.Warning)
	}
	return nil
}

func (d *seriesResponseDecoder) consumeSeries(s *storepb.Series) error {
	d.lb.Reset()
	for _, l := range s.Labels {
		if l.Value != "" {
			d.lb.Add(l.Name, l.Value)
		}
	}
	d.lb.Sort()
	d.chunks = d.chunks[:0]
	for _, c := range s.Chunks {
		if c.Raw == nil {
			return errNoRawChunk(c.MinTime, c.MaxTime)
		}
		data := d.slabs.alloc(len(c.Raw.Data))
		copy(data, c.Raw.Data)
		rc, err := newRawChunk(c.MinTime, c.MaxTime, c.Raw.Type, data)
		if err != nil {
			return err
		}
		d.chunks = append(d.chunks, rc)
	}
	if err := d.onSeries(d.lb.Labels(), d.chunks); err != nil {
		d.stopErr = err
		return err
	}
	return nil
}

// slabSize is the unit in which received bytes are stored: large enough that a query
// takes few slabs, small enough not to pin much for a small query.
const slabSize = 1 << 20

// slabAllocator carves received bytes out of pooled slabs. A query's series point into
// them until the querier is closed, which returns them to the pool (fanoutQuerier.Close):
// without this, every query allocated as many bytes as it fetched and left them to the
// garbage collector.
type slabAllocator struct {
	pool *sync.Pool // of *[]byte with capacity slabSize
	cur  []byte
	used []*[]byte
}

// alloc returns n bytes valid until the query's slabs are recycled. A request that does
// not fit in the current slab starts a new one. Whole batched messages come here (64
// series of a day of bucket chunks are ~300 KiB), so only requests larger than a slab
// are left to the garbage collector.
func (a *slabAllocator) alloc(n int) []byte {
	if n > slabSize {
		return make([]byte, n) // rare (huge messages): not worth a slab
	}
	if n > cap(a.cur)-len(a.cur) {
		var s *[]byte
		if a.pool != nil {
			s, _ = a.pool.Get().(*[]byte)
		}
		if s == nil {
			b := make([]byte, 0, slabSize)
			s = &b
		}
		a.used = append(a.used, s)
		a.cur = (*s)[:0]
	}
	off := len(a.cur)
	a.cur = a.cur[:off+n]
	return a.cur[off : off+n : off+n]
}

// Unmarshal decodes one SeriesResponse message. It is called by the gRPC codec.
func (d *seriesResponseDecoder) Unmarshal(buf []byte) error {
	return forEachField(buf, "SeriesResponse", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == fieldResponseSeries && typ == protowire.BytesType:
			return d.series(v)
		case num == fieldResponseBatch && typ == protowire.BytesType:
			return forEachField(v, "SeriesBatch", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == fieldBatchSeries && typ == protowire.BytesType {
					return d.series(v)
				}
				return nil
			})
		case num == fieldResponseWarning && typ == protowire.BytesType:
			d.warnings = append(d.warnings, string(v))
		}
		return nil
	})
}

func (d *seriesResponseDecoder) series(buf []byte) error {
	d.lb.Reset()
	d.chunks = d.chunks[:0]
	err := forEachField(buf, "Series", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == fieldSeriesLabels && typ == protowire.BytesType:
			var name, value []byte
			if err := forEachField(v, "Label", func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case num == fieldLabelName && typ == protowire.BytesType:
					name = v
				case num == fieldLabelValue && typ == protowire.BytesType:
					value = v
				}
				return nil
			}); err != nil {
				return err
			}
			if len(value) == 0 {
				return nil // an empty value means "no such label" in Prometheus
			}
			// No string copies here: Labels() below encodes the set into one new string.
			// (Even where it would not, the buffer is this message's own and never reused.)
			d.lb.Add(unsafeString(name), unsafeString(value))
		case num == fieldSeriesChunks && typ == protowire.BytesType:
			c, err := decodeAggrChunk(v)
			if err != nil {
				return err
			}
			d.chunks = append(d.chunks, c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Senders write labels sorted; sorting here costs nothing when they are.
	d.lb.Sort()
	if err := d.onSeries(d.lb.Labels(), d.chunks); err != nil {
		d.stopErr = err
		return err
	}
	return nil
}

func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func decodeAggrChunk(buf []byte) (rawChunk, error) {
	var (
		c      rawChunk
		hasRaw bool
		pbEnc  storepb.Chunk_Encoding
	)
	err := forEachField(buf, "AggrChunk", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldAggrMinTime && typ == protowire.VarintType:
			c.mint = int64(x)
		case num == fieldAggrMaxTime && typ == protowire.VarintType:
			c.maxt = int64(x)
		case num == fieldAggrRaw && typ == protowire.BytesType:
			hasRaw = true
			return forEachField(v, "Chunk", func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				switch {
				case num == fieldChunkType && typ == protowire.VarintType:
					pbEnc = storepb.Chunk_Encoding(x)
				case num == fieldChunkData && typ == protowire.BytesType:
					c.data = v
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	if !hasRaw {
		return c, errNoRawChunk(c.mint, c.maxt)
	}
	return newRawChunk(c.mint, c.maxt, pbEnc, c.data)
}

func errNoRawChunk(mint, maxt int64) error {
	return fmt.Errorf("chunk [%d,%d] has no raw data (downsampled data is not supported)", mint, maxt)
}

func newRawChunk(mint, maxt int64, pbEnc storepb.Chunk_Encoding, data []byte) (rawChunk, error) {
	enc, err := storeapi.EncodingFromPB(pbEnc)
	if err != nil {
		return rawChunk{}, fmt.Errorf("chunk [%d,%d]: %w", mint, maxt, err)
	}
	return rawChunk{mint: mint, maxt: maxt, enc: enc, data: data}, nil
}

// forEachField walks the fields of one protobuf message. For length-delimited fields v is
// the payload; for varints x is the value. Unknown fields and types are skipped, as
// protobuf requires, so newer senders with extra fields still decode.
func forEachField(buf []byte, msg string, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(buf) > 0 {
		num, typ, n := protowire.ConsumeTag(buf)
		if n < 0 {
			return fmt.Errorf("decode %s: bad field tag: %w", msg, protowire.ParseError(n))
		}
		buf = buf[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(buf)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(buf)
		default:
			n = protowire.ConsumeFieldValue(num, typ, buf)
		}
		if n < 0 {
			return fmt.Errorf("decode %s field %d: %w", msg, num, protowire.ParseError(n))
		}
		buf = buf[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
