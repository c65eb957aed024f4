package querier

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"github.com/vigil-obs/vigil/pkg/storeapi"
)

// xorChunk encodes (t, t) samples for the given timestamps.
func xorChunk(t *testing.T, ts ...int64) storepb.AggrChunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		app.Append(0, x, float64(x))
	}
	return storepb.AggrChunk{MinTime: ts[0], MaxTime: ts[len(ts)-1], Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: c.Bytes()}}
}

func collect(t *testing.T, it chunkenc.Iterator) []int64 {
	t.Helper()
	var out []int64
	for it.Next() != chunkenc.ValNone {
		ts, v := it.At()
		if float64(ts) != v {
			t.Fatalf("sample %d has value %g", ts, v)
		}
		out = append(out, ts)
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	return out
}

func TestFetchedSeries_OrdersAndMergesChunks(t *testing.T) {
	lset := labels.FromStrings("__name__", "m")
	for name, tc := range map[string]struct {
		chunks []storepb.AggrChunk
		want   []int64
		seek   int64
		after  []int64
	}{
		"disjoint, out of order": {
			chunks: []storepb.AggrChunk{xorChunk(t, 40, 50), xorChunk(t, 10, 20, 30)},
			want:   []int64{10, 20, 30, 40, 50},
			seek:   35, after: []int64{40, 50},
		},
		"overlapping (replicas, head vs block)": {
			chunks: []storepb.AggrChunk{xorChunk(t, 10, 20, 30), xorChunk(t, 20, 30, 40), xorChunk(t, 5, 10)},
			want:   []int64{5, 10, 20, 30, 40},
			seek:   20, after: []int64{20, 30, 40},
		},
		"single chunk": {
			chunks: []storepb.AggrChunk{xorChunk(t, 1, 2, 3)},
			want:   []int64{1, 2, 3},
			seek:   3, after: []int64{3},
		},
	} {
		t.Run(name, func(t *testing.T) {
			fs, err := newFetchedSeries(lset, tc.chunks)
			if err != nil {
				t.Fatal(err)
			}
			if got := collect(t, sampleSeries{fs}.Iterator(nil)); !equalInts(got, tc.want) {
				t.Errorf("samples = %v, want %v", got, tc.want)
			}
			it := sampleSeries{fs}.Iterator(nil)
			if it.Seek(tc.seek) == chunkenc.ValNone {
				t.Fatalf("seek %d found nothing", tc.seek)
			}
			first, _ := it.At()
			got := append([]int64{first}, collect(t, it)...)
			if !equalInts(got, tc.after) {
				t.Errorf("after seek %d: %v, want %v", tc.seek, got, tc.after)
			}
		})
	}
}

func TestSortAndCoalesce_MergesSplitSeries(t *testing.T) {
	a, b := labels.FromStrings("__name__", "a"), labels.FromStrings("__name__", "b")
	mk := func(l labels.Labels, c storepb.AggrChunk) *fetchedSeries {
		fs, err := newFetchedSeries(l, []storepb.AggrChunk{c})
		if err != nil {
			t.Fatal(err)
		}
		return fs
	}
	out := sortAndCoalesce([]*fetchedSeries{mk(b, xorChunk(t, 1, 2)), mk(a, xorChunk(t, 5)), mk(b, xorChunk(t, 2, 3))})
	if len(out) != 2 || !labels.Equal(out[0].lset, a) || !labels.Equal(out[1].lset, b) {
		t.Fatalf("got %d series", len(out))
	}
	if got := collect(t, sampleSeries{out[1]}.Iterator(nil)); !equalInts(got, []int64{1, 2, 3}) {
		t.Errorf("merged b = %v", got)
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConcatIterator_SeekAcrossChunksAndReuse(t *testing.T) {
	a, err := newFetchedSeries(labels.FromStrings("__name__", "a"), []storepb.AggrChunk{
		xorChunk(t, 1, 2, 3), xorChunk(t, 10, 11), xorChunk(t, 20, 21, 22), xorChunk(t, 30),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newFetchedSeries(labels.FromStrings("__name__", "b"), []storepb.AggrChunk{xorChunk(t, 5, 6), xorChunk(t, 7)})
	if err != nil {
		t.Fatal(err)
	}
	it := sampleSeries{a}.Iterator(nil)
	for _, step := range []struct{ seek, want int64 }{{0, 1}, {1, 1}, {2, 2}, {12, 20}, {15, 20}, {21, 21}, {23, 30}} {
		if it.Seek(step.seek) == chunkenc.ValNone {
			t.Fatalf("seek %d found nothing", step.seek)
		}
		if got := it.AtT(); got != step.want {
			t.Fatalf("seek %d: at %d, want %d", step.seek, got, step.want)
		}
	}
	if it.Seek(31) != chunkenc.ValNone || it.Next() != chunkenc.ValNone {
		t.Fatal("iterator not exhausted after the last chunk")
	}
	// The iterator is reused for the next series and starts from scratch.
	it2 := sampleSeries{b}.Iterator(it)
	if it2 != it {
		t.Error("iterator not reused")
	}
	if got := collect(t, it2); !equalInts(got, []int64{5, 6, 7}) {
		t.Errorf("reused iterator: %v", got)
	}
	if got := collect(t, sampleSeries{a}.Iterator(it2)); !equalInts(got, []int64{1, 2, 3, 10, 11, 20, 21, 22, 30}) {
		t.Errorf("reused again: %v", got)
	}
}

// newFetchedSeries builds a fetchedSeries from generated StoreAPI chunks.
func newFetchedSeries(lset labels.Labels, in []storepb.AggrChunk) (*fetchedSeries, error) {
	chunks := make([]rawChunk, 0, len(in))
	for _, c := range in {
		if c.Raw == nil {
			return nil, fmt.Errorf("chunk [%d,%d] has no raw data", c.MinTime, c.MaxTime)
		}
		enc, err := storeapi.EncodingFromPB(c.Raw.Type)
		if err != nil {
			return nil, err
		}
		chunks = append(chunks, rawChunk{mint: c.MinTime, maxt: c.MaxTime, enc: enc, data: c.Raw.Data})
	}
	s := &fetchedSeries{}
	s.init(lset, chunks, nil)
	return s, nil
}
