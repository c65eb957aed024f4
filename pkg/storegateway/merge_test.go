package storegateway

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
)

// readSet renders every series of a set with its samples in [mint, maxt] (untrimmed
// chunks reach further), reading the series only after the set is exhausted (as callers
// may) and sharing one chunk iterator.
func readSet(t *testing.T, set storage.ChunkSeriesSet, skipChunks bool, mint, maxt int64) []string {
	t.Helper()
	var all []storage.ChunkSeries
	for set.Next() {
		all = append(all, set.At())
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	var (
		out []string
		it  chunks.Iterator
	)
	for _, s := range all {
		line := s.Labels().String()
		if !skipChunks {
			it = s.Iterator(it)
			for it.Next() {
				meta := it.At()
				sit := meta.Chunk.Iterator(nil)
				for sit.Next() == chunkenc.ValFloat {
					ts, v := sit.At()
					if ts < meta.MinTime || ts > meta.MaxTime {
						t.Errorf("%s: sample at %d outside its chunk's [%d,%d]", line, ts, meta.MinTime, meta.MaxTime)
					}
					if ts >= mint && ts <= maxt {
						line += fmt.Sprintf(" %d:%g", ts, v)
					}
				}
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, line)
	}
	return out
}

// TestBlockSetQuerier_DirectSelectMatchesTSDBQueriers compares the direct index path of
// Select (taken when trimming is disabled, as the StoreAPI server asks) with the TSDB's
// block queriers and generic merge over the same blocks.
func TestBlockSetQuerier_DirectSelectMatchesTSDBQueriers(t *testing.T) {
	ser := func(name string, from, n int) storage.Series {
		return floatSeries(labels.FromStrings("__name__", "m", "s", name), int64(from)*15_000, n, float64(from)*1.5)
	}
	cases := map[string][][]storage.Series{
		// Series in some blocks only; the later block is written first (ULID order is not
		// time order).
		"disjoint": {
			{ser("b", 400, 300), ser("d", 400, 300)},
			{ser("a", 0, 100), ser("b", 0, 100), ser("c", 0, 100)},
			{ser("a", 800, 50), ser("d", 800, 50), ser("e", 800, 50)},
		},
		"overlapping": {
			{ser("a", 0, 100), ser("b", 0, 100)},
			{ser("a", 50, 100), ser("c", 50, 100)}, // replicated/uncompacted: overlaps the first
			{ser("a", 400, 10)},
		},
	}
	for name, blocks := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			for _, ss := range blocks {
				h.writeBlock("t", storegatewaytest.BlockOptions{}, ss...)
			}
			h.sync()
			qable, err := h.gw.tenantQueryable(context.Background(), "t")
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name       string
				mint, maxt int64
				hints      storage.SelectHints
				ms         []*labels.Matcher
			}{
				{name: "all", mint: 0, maxt: 1 << 40, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")}},
				{name: "regex", mint: 0, maxt: 1 << 40, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "s", "a|d")}},
				{name: "limit", mint: 0, maxt: 1 << 40, hints: storage.SelectHints{Limit: 2}, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")}},
				{name: "series", mint: 0, maxt: 1 << 40, hints: storage.SelectHints{Func: "series"}, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")}},
				// Only the first block's range: series of later blocks only are left out.
				{name: "range", mint: 0, maxt: 99 * 15_000, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")}},
				{name: "none", mint: 0, maxt: 1 << 40, ms: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "s", "zzz")}},
			} {
				q, err := qable.ChunkQuerier(tc.mint, tc.maxt)
				if err != nil {
					t.Fatal(err)
				}
				hints := tc.hints
				hints.Start, hints.End = tc.mint, tc.maxt
				want := readSet(t, q.Select(context.Background(), true, &hints, tc.ms...), hints.Func == "series", tc.mint, tc.maxt)
				hints.DisableTrimming = true
				direct := q.Select(context.Background(), true, &hints, tc.ms...)
				if _, ok := direct.(*mergeBlockSeriesSet); !ok {
					t.Fatalf("%s: Select with trimming disabled took the TSDB's path (%T)", tc.name, direct)
				}
				got := readSet(t, direct, hints.Func == "series", tc.mint, tc.maxt)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s:\ndirect: %v\ntsdb:   %v", tc.name, got, want)
				}
				if len(want) == 0 && tc.name != "none" {
					t.Errorf("%s: no series", tc.name)
				}
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
