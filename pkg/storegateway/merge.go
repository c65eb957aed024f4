package storegateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/util/annotations"
)

// maxLinearMergeBlocks bounds the number of blocks a Select merges by scanning all of them
// per series. A day of 2h blocks is 12; beyond the bound (long ranges of uncompacted
// blocks) the TSDB's block queriers and the generic heap merge are used.
const maxLinearMergeBlocks = 64

// blockSetQuerier queries the blocks of one tenant that overlap the query range.
//
// Selects that do not ask for trimming (the StoreAPI server never does) read the blocks'
// indexes directly and merge the blocks' series themselves, instead of through the TSDB's
// block queriers and storage.NewMergeChunkQuerier. For a query over a day of 2h blocks
// every series is decoded twelve times, and per block and series the TSDB's path
// allocates its label values, its labels, its chunk list and, on every At() (the generic
// merge's heap calls it in each comparison), a new series; it then compares equal label
// sets in full several times per series. Here each block decodes into reused buffers,
// label sets are matched by equality first (one string comparison in the common case
// where every block holds the series), and only the merged series is allocated.
type blockSetQuerier struct {
	// ChunkQuerier is the TSDB's block queriers merged: label calls, and Selects that ask
	// for trimming or sharding.
	storage.ChunkQuerier
	tsdbQueriers []storage.ChunkQuerier
	blocks       []*remoteBlock     // in min time order
	indexes      []blockIndexReader // of blocks, held until Close
	// disjoint is true when the blocks' time ranges do not overlap, so that a series'
	// chunks are its blocks' chunks one after the other.
	disjoint bool
}

// Close releases the blocks.
func (q *blockSetQuerier) Close() error {
	var errs []error
	for _, ir := range q.indexes {
		errs = append(errs, ir.Close())
	}
	q.indexes = nil
	if q.ChunkQuerier != nil {
		errs = append(errs, q.ChunkQuerier.Close())
	} else {
		for _, bq := range q.tsdbQueriers {
			errs = append(errs, bq.Close())
		}
	}
	return errors.Join(errs...)
}

// Select implements storage.ChunkQuerier.
func (q *blockSetQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	if hints == nil || !hints.DisableTrimming || hints.ShardCount > 0 || len(q.blocks) > maxLinearMergeBlocks {
		return q.ChunkQuerier.Select(ctx, true, hints, ms...)
	}
	for _, ir := range q.indexes {
		if !ir.ix.fastSeries() {
			return q.ChunkQuerier.Select(ctx, true, hints, ms...)
		}
	}
	m := &mergeBlockSeriesSet{
		cursors:    make([]*blockCursor, 0, len(q.blocks)),
		limit:      hints.Limit,
		disjoint:   q.disjoint,
		skipChunks: hints.Func == "series",
	}
	for i, b := range q.blocks {
		p, err := tsdb.PostingsForMatchers(ctx, q.indexes[i], ms...)
		if err != nil {
			return storage.ErrChunkSeriesSet(fmt.Errorf("block %s: postings: %w", b.id, err))
		}
		c := &blockCursor{b: b, ix: q.indexes[i].ix, p: p, mint: hints.Start, maxt: hints.End}
		// A no-op for the default label implementation; dedupelabels needs a table.
		c.builder.SetSymbolTable(labels.NewSymbolTable())
		m.cursors = append(m.cursors, c)
	}
	return m
}

// blockCursor walks the series of one block that a Select matched, each decoded into
// buffers reused for the next one.
type blockCursor struct {
	b          *remoteBlock
	ix         *blockIndex
	p          index.Postings
	mint, maxt int64

	builder labels.ScratchBuilder
	// lset and chks are the current series: labels in the builder's buffer (pointing into
	// the index), chunks that overlap [mint, maxt] in time order.
	lset  labels.Labels
	chks  []chunks.Meta
	valid bool
	err   error
}

// next moves to the next series that has chunks in the time range.
func (c *blockCursor) next() bool {
	c.valid = false
	for c.p.Next() {
		if err := c.ix.series(c.p.At(), &c.builder, &c.chks); err != nil {
			c.err = fmt.Errorf("block %s: %w", c.b.id, err)
			return false
		}
		n := 0
		for _, m := range c.chks {
			if m.MaxTime >= c.mint && m.MinTime <= c.maxt {
				c.chks[n] = m
				n++
			}
		}
		if n == 0 {
			continue // like the TSDB's queriers: no data in range, no series
		}
		c.chks = c.chks[:n]
		c.builder.Overwrite(&c.lset)
		c.valid = true
		return true
	}
	if err := c.p.Err(); err != nil {
		c.err = fmt.Errorf("block %s: postings: %w", c.b.id, err)
	}
	return false
}

// mergeBlockSeriesSet merges the sorted series of several blocks (cursors in block time
// order) into one sorted set with one series per label set.
type mergeBlockSeriesSet struct {
	cursors    []*blockCursor
	started    bool
	cur        []int // indexes of the cursors at the current series
	limit, n   int
	disjoint   bool
	skipChunks bool
	err        error

	// Merged series and their chunk lists are carved out of slabs: one allocation per
	// few hundred series instead of two per series.
	seriesSlab []mergedSeries
	chunkSlab  []blockChunk
}

func (m *mergeBlockSeriesSet) advance(c *blockCursor) {
	if !c.next() && c.err != nil && m.err == nil {
		m.err = c.err
	}
}

// Next implements storage.ChunkSeriesSet.
func (m *mergeBlockSeriesSet) Next() bool {
	if m.err != nil || (m.limit > 0 && m.n >= m.limit) {
		return false
	}
	if !m.started {
		m.started = true
		for _, c := range m.cursors {
			m.advance(c)
		}
	} else {
		for _, i := range m.cur {
			m.advance(m.cursors[i])
		}
	}
	if m.err != nil {
		return false
	}
	m.cur = m.cur[:0]
	var lowest labels.Labels
	for i, c := range m.cursors {
		if !c.valid {
			continue
		}
		switch {
		case len(m.cur) == 0:
			lowest = c.lset
		case labels.Equal(c.lset, lowest):
		case labels.Compare(c.lset, lowest) < 0:
			lowest = c.lset
			m.cur = m.cur[:0]
		default:
			continue
		}
		m.cur = append(m.cur, i)
	}
	if len(m.cur) == 0 {
		return false
	}
	m.n++
	return true
}

// At implements storage.ChunkSeriesSet. The series owns its labels and chunk list, so it
// stays usable after Next; chunks are read when it is iterated.
func (m *mergeBlockSeriesSet) At() storage.ChunkSeries {
	if len(m.seriesSlab) == 0 {
		m.seriesSlab = make([]mergedSeries, 256)
	}
	s := &m.seriesSlab[0]
	m.seriesSlab = m.seriesSlab[1:]
	s.lset = ownLabels(m.cursors[m.cur[0]].lset)
	if m.skipChunks {
		return s
	}
	n := 0
	for _, i := range m.cur {
		n += len(m.cursors[i].chks)
	}
	if len(m.chunkSlab) < n {
		m.chunkSlab = make([]blockChunk, max(n, 4096))
	}
	// The capacity is capped so the series never writes into the next one's chunks.
	chks := m.chunkSlab[:0:n]
	m.chunkSlab = m.chunkSlab[n:]
	for _, i := range m.cur {
		c := m.cursors[i]
		for _, meta := range c.chks {
			chks = append(chks, blockChunk{b: c.b, ref: meta.Ref, mint: meta.MinTime, maxt: meta.MaxTime})
		}
	}
	s.chks = chks
	if !m.disjoint {
		for i := 1; i < len(chks); i++ {
			if chks[i].mint <= chks[i-1].maxt {
				s.overlapping = true
				break
			}
		}
	}
	return s
}

// Err implements storage.ChunkSeriesSet.
func (m *mergeBlockSeriesSet) Err() error { return m.err }

// Warnings implements storage.ChunkSeriesSet.
func (m *mergeBlockSeriesSet) Warnings() annotations.Annotations { return nil }

// blockChunk is a chunk of a block, not read yet.
type blockChunk struct {
	b          *remoteBlock
	ref        chunks.ChunkRef
	mint, maxt int64
}

// mergedSeries is one series of the merged blocks: its chunks, block after block.
type mergedSeries struct {
	lset labels.Labels
	chks []blockChunk
	// overlapping is true when chunks of different blocks overlap in time (replicated or
	// not yet compacted blocks); they are then merged sample by sample.
	overlapping bool
}

func (s *mergedSeries) Labels() labels.Labels { return s.lset }

func (s *mergedSeries) Iterator(it chunks.Iterator) chunks.Iterator {
	if s.overlapping {
		return s.compactingIterator()
	}
	ci, ok := it.(*blockChunkIterator)
	if !ok {
		ci = &blockChunkIterator{}
	}
	ci.chks, ci.i, ci.cur, ci.err = s.chks, -1, chunks.Meta{}, nil
	return ci
}

// compactingIterator merges the chunks of overlapping blocks with the TSDB's compacting
// merger, one input series per block.
func (s *mergedSeries) compactingIterator() chunks.Iterator {
	var parts []storage.ChunkSeries
	for start := 0; start < len(s.chks); {
		end := start + 1
		for end < len(s.chks) && s.chks[end].b == s.chks[start].b {
			end++
		}
		metas := make([]chunks.Meta, 0, end-start)
		for _, c := range s.chks[start:end] {
			chk, err := c.b.chunk(c.ref)
			if err != nil {
				return errChunkIterator{err}
			}
			metas = append(metas, chunks.Meta{Ref: c.ref, MinTime: c.mint, MaxTime: c.maxt, Chunk: chk})
		}
		parts = append(parts, &storage.ChunkSeriesEntry{
			Lset:            s.lset,
			ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator { return storage.NewListChunkSeriesIterator(metas...) },
		})
		start = end
	}
	return compactChunks(parts...).Iterator(nil)
}

// blockChunkIterator reads the chunks of a merged series in order, from the chunk cache
// or the bucket.
type blockChunkIterator struct {
	chks []blockChunk
	i    int
	cur  chunks.Meta
	err  error
}

func (it *blockChunkIterator) Next() bool {
	if it.err != nil || it.i+1 >= len(it.chks) {
		it.i = len(it.chks)
		return false
	}
	it.i++
	c := it.chks[it.i]
	chk, err := c.b.chunk(c.ref)
	if err != nil {
		it.err = err
		return false
	}
	it.cur = chunks.Meta{Ref: c.ref, MinTime: c.mint, MaxTime: c.maxt, Chunk: chk}
	return true
}

func (it *blockChunkIterator) At() chunks.Meta { return it.cur }

func (it *blockChunkIterator) Err() error { return it.err }
