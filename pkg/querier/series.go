package querier

import (
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/thanos/pkg/store/storepb"

	"github.com/vigil-obs/vigil/pkg/querier/storeapi"
)

// rawChunk is one decoded-on-demand chunk received through the StoreAPI.
type rawChunk struct {
	mint, maxt int64
	chk        chunkenc.Chunk
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

// newFetchedSeries converts the chunks of a StoreAPI series. Only raw chunks are supported:
// Vigil never serves downsampled aggregates.
func newFetchedSeries(lset labels.Labels, in []storepb.AggrChunk) (*fetchedSeries, error) {
	s := &fetchedSeries{lset: lset, chunks: make([]rawChunk, 0, len(in))}
	if err := s.add(in); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *fetchedSeries) add(in []storepb.AggrChunk) error {
	for _, c := range in {
		if c.Raw == nil {
			return fmt.Errorf("series %s: chunk [%d,%d] has no raw data (downsampled data is not supported)", s.lset, c.MinTime, c.MaxTime)
		}
		enc, err := storeapi.EncodingFromPB(c.Raw.Type)
		if err != nil {
			return fmt.Errorf("series %s: %w", s.lset, err)
		}
		chk, err := chunkenc.FromData(enc, c.Raw.Data)
		if err != nil {
			return fmt.Errorf("series %s: decode chunk: %w", s.lset, err)
		}
		s.chunks = append(s.chunks, rawChunk{mint: c.MinTime, maxt: c.MaxTime, chk: chk})
	}
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
	return nil
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
	// One chunk needs no merging. Several go through the chain iterator, which also merges
	// overlapping chunks; for sorted, disjoint chunks it costs one timestamp comparison per
	// sample. (A hand-written concatenating iterator would need a Seek(int64) method, which
	// go vet's stdmethods check rejects.)
	if len(s.chunks) == 1 {
		return s.chunks[0].chk.Iterator(it)
	}
	its := make([]chunkenc.Iterator, 0, len(s.chunks))
	for _, c := range s.chunks {
		its = append(its, c.chk.Iterator(nil))
	}
	return storage.ChainSampleIteratorFromIterators(it, its)
}

// chunkSeries adapts fetchedSeries to storage.ChunkSeries.
type chunkSeries struct{ *fetchedSeries }

func (s chunkSeries) Labels() labels.Labels { return s.lset }

func (s chunkSeries) Iterator(chunks.Iterator) chunks.Iterator {
	metas := make([]chunks.Meta, 0, len(s.chunks))
	for _, c := range s.chunks {
		metas = append(metas, chunks.Meta{MinTime: c.mint, MaxTime: c.maxt, Chunk: c.chk})
	}
	return storage.NewListChunkSeriesIterator(metas...)
}

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
