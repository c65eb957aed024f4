package querier

import (
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// rawChunk is one chunk received through the StoreAPI, kept as encoded bytes. The bytes
// alias the gRPC message buffer (the codec gives every message its own copy); chunks are
// only decoded while iterating, into reused chunk and iterator objects.
type rawChunk struct {
	mint, maxt int64
	enc        chunkenc.Encoding
	data       []byte
}

// fetchedSeries is one series as returned by one backend: labels plus its raw chunks sorted
// by min time.
type fetchedSeries struct {
	lset   labels.Labels
	chunks []rawChunk
	// overlapping is true when chunks overlap in time (e.g. out-of-order head chunks), in
	// which case samples must be merged instead of concatenated.
	overlapping bool
}

// init sets the series up with buf (len 0) as chunk storage.
func (s *fetchedSeries) init(lset labels.Labels, in []rawChunk, buf []rawChunk) {
	s.lset, s.chunks = lset, buf
	s.add(in)
}

// add appends chunks of the same series (a backend may split one series over several
// messages).
func (s *fetchedSeries) add(in []rawChunk) {
	s.chunks = append(s.chunks, in...)
	if !slices.IsSortedFunc(s.chunks, cmpChunk) {
		slices.SortStableFunc(s.chunks, cmpChunk)
	}
	s.overlapping = false
	for i := 1; i < len(s.chunks); i++ {
		if s.chunks[i].mint <= s.chunks[i-1].maxt {
			s.overlapping = true
			break
		}
	}
}

func cmpChunk(a, b rawChunk) int {
	if a.mint != b.mint {
		if a.mint < b.mint {
			return -1
		}
		return 1
	}
	return 0
}

// sampleSeries adapts fetchedSeries to storage.Series.
type sampleSeries struct{ *fetchedSeries }

func (s sampleSeries) Labels() labels.Labels { return s.lset }

func (s sampleSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	if !s.overlapping {
		// Sorted, disjoint chunks (the normal case): concatenate them, reusing the
		// caller's iterator and its decoders.
		ci, ok := it.(*concatIterator[int64])
		if !ok {
			ci = &concatIterator[int64]{}
		}
		ci.reset(s.chunks)
		return ci
	}
	// Overlapping chunks (out-of-order head data) go through the chain iterator, which
	// merges samples.
	its := make([]chunkenc.Iterator, 0, len(s.chunks))
	for _, c := range s.chunks {
		chk, err := chunkenc.FromData(c.enc, c.data)
		if err != nil {
			return chunkenc.NewNopIterator() // unreachable: encodings are checked on receipt
		}
		its = append(its, chk.Iterator(nil))
	}
	return storage.ChainSampleIteratorFromIterators(it, its)
}

// concatIterator iterates over sorted, non-overlapping chunks one after the other. It keeps
// one chunk and one iterator per encoding and re-points them at each chunk's bytes, so a
// series costs no allocation once the iterator is warm.
//
// The type parameter exists only for go vet: its stdmethods check insists that any method
// named Seek taking an int64 has io.Seeker's signature, and does not look through type
// parameters. Use concatIterator[int64], which implements chunkenc.Iterator.
type concatIterator[T ~int64] struct {
	chunkenc.Iterator // the current chunk's iterator; nil before the first and after the last chunk

	chunks []rawChunk
	i      int // index of the current chunk
	chks   [chunkenc.EncFloatHistogram + 1]chunkenc.Chunk
	its    [chunkenc.EncFloatHistogram + 1]chunkenc.Iterator
	err    error
}

var _ chunkenc.Iterator = (*concatIterator[int64])(nil)

func (c *concatIterator[T]) reset(chks []rawChunk) {
	c.Iterator, c.chunks, c.i, c.err = nil, chks, -1, nil
}

// open makes chunk i the current one.
func (c *concatIterator[T]) open(i int) bool {
	rc := c.chunks[i]
	c.i = i
	if int(rc.enc) >= len(c.chks) {
		c.fail(fmt.Errorf("unsupported chunk encoding %s", rc.enc))
		return false
	}
	chk := c.chks[rc.enc]
	if chk == nil {
		var err error
		if chk, err = chunkenc.FromData(rc.enc, rc.data); err != nil {
			c.fail(err)
			return false
		}
		c.chks[rc.enc] = chk
	} else {
		chk.Reset(rc.data)
	}
	c.its[rc.enc] = chk.Iterator(c.its[rc.enc])
	c.Iterator = c.its[rc.enc]
	return true
}

func (c *concatIterator[T]) fail(err error) {
	c.err, c.Iterator, c.i = err, nil, len(c.chunks)
}

// current reports the end of the current chunk's samples, recording its error if any.
func (c *concatIterator[T]) currentDone() bool {
	if err := c.Iterator.Err(); err != nil {
		c.fail(err)
		return false
	}
	return true
}

// Next implements chunkenc.Iterator.
func (c *concatIterator[T]) Next() chunkenc.ValueType {
	for {
		if c.Iterator != nil {
			if vt := c.Iterator.Next(); vt != chunkenc.ValNone {
				return vt
			}
			if !c.currentDone() {
				return chunkenc.ValNone
			}
		}
		if c.i+1 >= len(c.chunks) {
			c.Iterator, c.i = nil, len(c.chunks)
			return chunkenc.ValNone
		}
		if !c.open(c.i + 1) {
			return chunkenc.ValNone
		}
	}
}

// Seek implements chunkenc.Iterator: it moves to the first sample at or after t, and does
// nothing if the current sample already is.
func (c *concatIterator[T]) Seek(t T) chunkenc.ValueType {
	ts := int64(t)
	if c.Iterator != nil {
		if vt := c.Iterator.Seek(ts); vt != chunkenc.ValNone {
			return vt
		}
		if !c.currentDone() {
			return chunkenc.ValNone
		}
	}
	for {
		next := c.i + 1
		if next >= len(c.chunks) {
			c.Iterator, c.i = nil, len(c.chunks)
			return chunkenc.ValNone
		}
		if c.chunks[next].maxt < ts {
			c.i = next // skip chunks that end before t without decoding them
			continue
		}
		if !c.open(next) {
			return chunkenc.ValNone
		}
		if vt := c.Iterator.Seek(ts); vt != chunkenc.ValNone {
			return vt
		}
		if !c.currentDone() {
			return chunkenc.ValNone
		}
	}
}

// Err implements chunkenc.Iterator.
func (c *concatIterator[T]) Err() error { return c.err }

// chunkSeries adapts fetchedSeries to storage.ChunkSeries.
type chunkSeries struct{ *fetchedSeries }

func (s chunkSeries) Labels() labels.Labels { return s.lset }

func (s chunkSeries) Iterator(chunks.Iterator) chunks.Iterator {
	metas := make([]chunks.Meta, 0, len(s.chunks))
	for _, c := range s.chunks {
		chk, err := chunkenc.FromData(c.enc, c.data)
		if err != nil {
			return errChunksIterator{fmt.Errorf("series %s: decode chunk: %w", s.lset, err)}
		}
		metas = append(metas, chunks.Meta{MinTime: c.mint, MaxTime: c.maxt, Chunk: chk})
	}
	return storage.NewListChunkSeriesIterator(metas...)
}

type errChunksIterator struct{ err error }

func (errChunksIterator) At() chunks.Meta { return chunks.Meta{} }
func (errChunksIterator) Next() bool      { return false }
func (e errChunksIterator) Err() error    { return e.err }

// listSeriesSet iterates over fetched series that are already sorted and unique by labels.
type listSeriesSet struct {
	series []*fetchedSeries
	i      int
	warns  []error
}

func (l *listSeriesSet) Next() bool {
	l.i++
	return l.i <= len(l.series)
}

func (l *listSeriesSet) At() storage.Series { return sampleSeries{l.series[l.i-1]} }

func (l *listSeriesSet) Err() error { return nil }

func (l *listSeriesSet) Warnings() annotations.Annotations {
	var ws annotations.Annotations
	for _, w := range l.warns {
		ws.Add(w)
	}
	return ws
}

type listChunkSeriesSet struct{ listSeriesSet }

func (l *listChunkSeriesSet) At() storage.ChunkSeries { return chunkSeries{l.series[l.i-1]} }
