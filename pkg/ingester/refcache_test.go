package ingester

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

func TestRefCacheUnit(t *testing.T) {
	c := newRefCache()
	ls := []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "a"}}
	h, ok := c.hashPrompb(ls)
	if !ok {
		t.Fatal("canonical labels not cacheable")
	}
	lset := labels.FromStrings("__name__", "up", "job", "a")
	if c.hashLabels(lset) != h {
		t.Fatal("hashLabels and hashPrompb disagree")
	}
	for _, bad := range [][]prompb.Label{
		{{Name: "job", Value: "a"}, {Name: "__name__", Value: "up"}},      // unsorted
		{{Name: "__name__", Value: "up"}, {Name: "job", Value: ""}},       // empty value
		{{Name: "__name__", Value: "up"}, {Name: "__name__", Value: "x"}}, // duplicate name
		nil,
	} {
		if _, ok := c.hashPrompb(bad); ok {
			t.Fatalf("%v must not be cacheable", bad)
		}
	}
	if _, ok := c.get(h, ls); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(h, 7, lset)
	if e, ok := c.get(h, ls); !ok || e.ref != 7 || !labels.Equal(e.lset, lset) {
		t.Fatalf("get = %+v, %v", e, ok)
	}
	// A colliding hash with other labels is a miss, never a wrong series.
	other := []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "b"}}
	if _, ok := c.get(h, other); ok {
		t.Fatal("labels not verified on hit")
	}
	if _, ok := c.get(h, ls[:1]); ok {
		t.Fatal("prefix of the cached labels matched")
	}
	// Deletion of another reference with the same labels keeps the entry.
	c.deleted(map[chunks.HeadSeriesRef]labels.Labels{8: lset})
	if c.len() != 1 {
		t.Fatal("entry of a newer series removed")
	}
	c.deleted(map[chunks.HeadSeriesRef]labels.Labels{7: lset})
	if c.len() != 0 {
		t.Fatal("entry of a deleted series kept")
	}
}

// TestRefCacheFollowsHead pushes known series by reference, then lets the head drop
// them (flush) and checks that the cache forgets them and new pushes recreate them.
func TestRefCacheFollowsHead(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	ctx := ctxFor("t1")
	base := time.Now().Add(-time.Minute).UnixMilli()
	push := func(ts int64, v float64) {
		t.Helper()
		resp, err := ing.Push(ctx, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
			series([]string{"__name__", "a", "job", "x"}, prompb.Sample{Timestamp: ts, Value: v}),
			series([]string{"__name__", "b", "job", "x"}, prompb.Sample{Timestamp: ts, Value: v}),
			// Not canonical (unsorted): never cached, still stored.
			series([]string{"job", "x", "__name__", "c"}, prompb.Sample{Timestamp: ts, Value: v}),
		}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.SamplesWritten != 3 || len(resp.Rejections) != 0 {
			t.Fatalf("push: %s", resp)
		}
	}
	push(base, 1)
	u := ing.getTSDB("t1")
	if n := u.refs.len(); n != 2 {
		t.Fatalf("%d cached refs, want 2", n)
	}
	push(base+15_000, 2) // by reference
	if n := u.db.Head().NumSeries(); n != 3 {
		t.Fatalf("head has %d series, want 3", n)
	}

	if err := ing.FlushAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := u.db.Head().NumSeries(); n != 0 {
		t.Fatalf("head has %d series after flush, want 0", n)
	}
	if n := u.refs.len(); n != 0 {
		t.Fatalf("%d cached refs after the head dropped every series", n)
	}
	push(base+30_000, 3)
	if n := u.db.Head().NumSeries(); n != 3 {
		t.Fatalf("head has %d series after re-push, want 3", n)
	}
	// A stale reference (series gone from the head) falls back to the cached labels.
	for i := range u.refs.shards {
		for h, e := range u.refs.shards[i].m {
			u.refs.shards[i].m[h] = refEntry{ref: e.ref + 1000, lset: e.lset}
		}
	}
	push(base+45_000, 4)
	got := querySeries(t, serveGRPC(t, ing), "t1", base, base+60_000)
	if len(got) != 3 {
		t.Fatalf("%d series stored, want 3: %+v", len(got), got)
	}
	for _, s := range got {
		if n := len(s.samples); n != 4 {
			t.Fatalf("series %s has %d samples", s.lset, n)
		}
	}
}
