package storegateway

import (
	"context"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// maxLinearMergeSets bounds the number of blocks mergeBlockSeriesSet scans linearly per
// series. A day of 2h blocks is 12; beyond the bound (long ranges of uncompacted blocks)
// the generic heap merge is used.
const maxLinearMergeSets = 64

// blockSetQuerier queries several blocks of one tenant. Select merges the blocks' sorted
// series sets itself instead of through storage.NewMergeChunkQuerier: the generic merge
// keeps the sets in a heap whose comparisons call At() on the TSDB's block series sets,
// and each of those calls allocates a new series (1.5M allocations per query set of the
// query benchmark), and it compares equal label sets in full several times per series.
// Here each set's At() is taken once per series and label sets are matched by equality
// first, which is one string comparison when every block holds the series.
type blockSetQuerier struct {
	storage.ChunkQuerier // merge of qs, for the label calls and Close
	qs                   []storage.ChunkQuerier
	// disjoint is true when the blocks' time ranges do not overlap; qs are then in time
	// order and a series' chunks are its blocks' chunks one after the other.
	disjoint bool
}

func (q *blockSetQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	if len(q.qs) > maxLinearMergeSets {
		return q.ChunkQuerier.Select(ctx, true, hints, ms...)
	}
	sets := make([]storage.ChunkSeriesSet, len(q.qs))
	for i, bq := range q.qs {
		sets[i] = bq.Select(ctx, true, hints, ms...) // merging needs sorted sets
	}
	limit := 0
	if hints != nil {
		limit = hints.Limit
	}
	return &mergeBlockSeriesSet{sets: sets, heads: make([]storage.ChunkSeries, len(sets)), limit: limit, disjoint: q.disjoint}
}

// mergeBlockSeriesSet merges sorted ChunkSeriesSets of several blocks into one sorted set
// with one series per label set.
type mergeBlockSeriesSet struct {
	sets     []storage.ChunkSeriesSet
	heads    []storage.ChunkSeries // At() of sets[i]; nil once the set is exhausted
	started  bool
	cur      []int // indexes of the sets whose head is the current series
	limit, n int
	disjoint bool
	err      error
	// parts is carved into the per-series lists of block series, so a merged series
	// costs no slice allocation of its own.
	parts []storage.ChunkSeries
}

func (m *mergeBlockSeriesSet) advance(i int) {
	if m.sets[i].Next() {
		m.heads[i] = m.sets[i].At()
		return
	}
	m.heads[i] = nil
	if err := m.sets[i].Err(); err != nil && m.err == nil {
		m.err = err
	}
}

func (m *mergeBlockSeriesSet) Next() bool {
	if m.err != nil || (m.limit > 0 && m.n >= m.limit) {
		return false
	}
	if !m.started {
		m.started = true
		for i := range m.sets {
			m.advance(i)
		}
	} else {
		for _, i := range m.cur {
			m.advance(i)
		}
	}
	if m.err != nil {
		return false
	}
	m.cur = m.cur[:0]
	var lowest labels.Labels
	for i, h := range m.heads {
		if h == nil {
			continue
		}
		l := h.Labels()
		switch {
		case len(m.cur) == 0:
			lowest = l
		case labels.Equal(l, lowest):
		case labels.Compare(l, lowest) < 0:
			lowest = l
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

func (m *mergeBlockSeriesSet) At() storage.ChunkSeries {
	if len(m.cur) == 1 {
		return m.heads[m.cur[0]]
	}
	n := len(m.cur)
	if len(m.parts) < n {
		m.parts = make([]storage.ChunkSeries, max(n, 16*len(m.sets)))
	}
	// The capacity is capped so the series never writes into the next one's parts.
	parts := m.parts[:n:n]
	m.parts = m.parts[n:]
	for k, i := range m.cur {
		parts[k] = m.heads[i]
	}
	if !m.disjoint {
		return concatOrCompactChunks(parts...)
	}
	return &concatSeries{parts: parts}
}

func (m *mergeBlockSeriesSet) Err() error { return m.err }

func (m *mergeBlockSeriesSet) Warnings() annotations.Annotations {
	var ws annotations.Annotations
	for _, s := range m.sets {
		ws.Merge(s.Warnings())
	}
	return ws
}

// concatSeries is one series held by blocks with disjoint time ranges, parts in time
// order: its chunks are those of each part in turn.
type concatSeries struct{ parts []storage.ChunkSeries }

func (s *concatSeries) Labels() labels.Labels { return s.parts[0].Labels() }

func (s *concatSeries) Iterator(it chunks.Iterator) chunks.Iterator {
	ci, ok := it.(*concatChunkIterator)
	if !ok {
		ci = &concatChunkIterator{}
	}
	ci.parts, ci.i, ci.err = s.parts, -1, nil
	if ci.cur != nil {
		ci.spare, ci.cur = ci.cur, nil
	}
	return ci
}

// concatChunkIterator iterates over the chunks of several block series one after the
// other, reusing one block chunk iterator for all of them (each is drained before the
// next part starts; the chunks it returned stay valid).
type concatChunkIterator struct {
	parts []storage.ChunkSeries
	i     int
	cur   chunks.Iterator // the current part's iterator; nil before the first part
	spare chunks.Iterator // a drained iterator to reuse for the next part
	err   error
}

func (c *concatChunkIterator) Next() bool {
	for {
		if c.cur != nil {
			if c.cur.Next() {
				return true
			}
			if err := c.cur.Err(); err != nil {
				c.err, c.i = err, len(c.parts)
				return false
			}
			c.spare, c.cur = c.cur, nil
		}
		if c.i+1 >= len(c.parts) {
			c.i = len(c.parts)
			return false
		}
		c.i++
		c.cur = c.parts[c.i].Iterator(c.spare)
	}
}

func (c *concatChunkIterator) At() chunks.Meta { return c.cur.At() }

func (c *concatChunkIterator) Err() error { return c.err }
