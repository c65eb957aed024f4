package storegateway

import (
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// sliceChunkSet is a sorted ChunkSeriesSet over fixed series, optionally failing at the end.
type sliceChunkSet struct {
	series []storage.ChunkSeries
	i      int
	err    error
}

func (s *sliceChunkSet) Next() bool {
	s.i++
	return s.i <= len(s.series)
}
func (s *sliceChunkSet) At() storage.ChunkSeries { return s.series[s.i-1] }
func (s *sliceChunkSet) Err() error {
	if s.i > len(s.series) {
		return s.err
	}
	return nil
}
func (s *sliceChunkSet) Warnings() annotations.Annotations { return nil }

// blockPart is the part of series name held by a block starting at from: two samples.
func blockPart(name string, from int64) storage.ChunkSeries {
	return storage.NewListChunkSeriesFromSamples(labels.FromStrings("__name__", name),
		[]chunks.Sample{sample{t: from, f: float64(from)}, sample{t: from + 1, f: float64(from + 1)}})
}

func chunkTimes(t *testing.T, it chunks.Iterator) []int64 {
	t.Helper()
	var out []int64
	for it.Next() {
		sit := it.At().Chunk.Iterator(nil)
		for sit.Next() != chunkenc.ValNone {
			ts, _ := sit.At()
			out = append(out, ts)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMergeBlockSeriesSet_SeriesInSomeBlocks(t *testing.T) {
	blocks := func() []storage.ChunkSeriesSet {
		return []storage.ChunkSeriesSet{
			&sliceChunkSet{series: []storage.ChunkSeries{blockPart("a", 0), blockPart("b", 0), blockPart("c", 0)}},
			&sliceChunkSet{series: []storage.ChunkSeries{blockPart("b", 100), blockPart("d", 100)}},
			&sliceChunkSet{series: []storage.ChunkSeries{blockPart("a", 200), blockPart("d", 200)}},
		}
	}
	want := map[string][]int64{
		"a": {0, 1, 200, 201},
		"b": {0, 1, 100, 101},
		"c": {0, 1},
		"d": {100, 101, 200, 201},
	}
	for _, disjoint := range []bool{true, false} {
		sets := blocks()
		m := &mergeBlockSeriesSet{sets: sets, heads: make([]storage.ChunkSeries, len(sets)), disjoint: disjoint}
		var got []storage.ChunkSeries
		for m.Next() {
			got = append(got, m.At())
		}
		if err := m.Err(); err != nil {
			t.Fatal(err)
		}
		var names []string
		var it chunks.Iterator
		// Series are read after the set is exhausted, and share one iterator, as callers do.
		for _, s := range got {
			name := s.Labels().Get("__name__")
			names = append(names, name)
			it = s.Iterator(it)
			if ts := chunkTimes(t, it); !slices.Equal(ts, want[name]) {
				t.Errorf("disjoint=%v: series %s: samples at %v, want %v", disjoint, name, ts, want[name])
			}
		}
		if !slices.Equal(names, []string{"a", "b", "c", "d"}) {
			t.Errorf("disjoint=%v: series %v, want a b c d", disjoint, names)
		}
	}

	sets := blocks()
	m := &mergeBlockSeriesSet{sets: sets, heads: make([]storage.ChunkSeries, len(sets)), disjoint: true, limit: 2}
	n := 0
	for m.Next() {
		n++
	}
	if n != 2 {
		t.Errorf("limit 2: got %d series", n)
	}
}

func TestMergeBlockSeriesSet_StopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	sets := []storage.ChunkSeriesSet{
		&sliceChunkSet{series: []storage.ChunkSeries{blockPart("a", 0), blockPart("b", 0)}},
		&sliceChunkSet{series: []storage.ChunkSeries{blockPart("a", 100)}, err: boom},
	}
	m := &mergeBlockSeriesSet{sets: sets, heads: make([]storage.ChunkSeries, len(sets)), disjoint: true}
	n := 0
	for m.Next() {
		n++
	}
	if !errors.Is(m.Err(), boom) {
		t.Fatalf("err = %v, want %v", m.Err(), boom)
	}
	if n != 1 {
		t.Errorf("got %d series before the error, want 1", n)
	}
}
