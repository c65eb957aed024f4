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

	ls2 := []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "b"}}
	lset2 := labels.FromStrings("__name__", "up", "job", "b")
	unsorted := []prompb.Label{{Name: "job", Value: "c"}, {Name: "__name__", Value: "up"}}
	series := []prompb.TimeSeries{{Labels: ls}, {Labels: unsorted}, {Labels: ls2}}
	out := make([]refLookup, len(series))
	if !c.lookup(series, out) || out[0].ref != 0 || out[2].ref != 0 || out[1].cacheable {
		t.Fatalf("lookup in an empty cache: %+v", out)
	}
	out[0].newRef, out[0].newLset = 7, lset
	out[2].newRef, out[2].newLset = 9, lset2
	c.update(out)
	if c.len() != 2 {
		t.Fatalf("%d entries, want 2", c.len())
	}
	if c.lookup(series, out) || out[0].ref != 7 || !labels.Equal(out[0].lset, lset) || out[2].ref != 9 || out[1].ref != 0 {
		t.Fatalf("lookup after update: %+v", out)
	}
	// Without the unsorted series in between, ls2 follows ls: a new link is needed once.
	series = []prompb.TimeSeries{{Labels: ls}, {Labels: ls2}}
	out = out[:2]
	if !c.lookup(series, out) || out[0].ref != 7 || out[1].ref != 9 {
		t.Fatalf("lookup in a new order: %+v", out)
	}
	c.update(out)
	if c.lookup(series, out) || out[0].ref != 7 || out[1].ref != 9 {
		t.Fatalf("lookup in a learnt order: %+v", out)
	}

	// An entry with the hash of ls but other labels (a collision) is a miss, never a
	// wrong series.
	c.put(h, 11, lset2)
	if !c.lookup(series[:1], out[:1]) || out[0].ref != 0 {
		t.Fatalf("labels not verified on hit: %+v", out[0])
	}
	c.put(h, 7, lset)

	// Deletion of another reference with the same labels keeps the entry.
	c.deleted(map[chunks.HeadSeriesRef]labels.Labels{8: lset})
	if c.len() != 2 {
		t.Fatal("entry of a newer series removed")
	}
	c.deleted(map[chunks.HeadSeriesRef]labels.Labels{7: lset, 9: lset2})
	if c.len() != 0 {
		t.Fatal("entries of deleted series kept")
	}
	// Deleted entries (and predictions pointing at them) are misses.
	if !c.lookup(series, out) || out[0].ref != 0 || out[1].ref != 0 {
		t.Fatalf("lookup after deletion: %+v", out)
	}
	// Freed entries are reused.
	out[0].newRef, out[0].newLset = 12, lset
	out[1].newRef, out[1].newLset = 13, lset2
	c.update(out)
	if len(c.entries) != 2 || c.len() != 2 {
		t.Fatalf("%d entries for %d series", len(c.entries), c.len())
	}
	if c.lookup(series, out) || out[0].ref != 12 || out[1].ref != 13 {
		t.Fatalf("lookup after re-adding: %+v", out)
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
	u.refs.mu.Lock()
	for i := range u.refs.entries {
		if u.refs.entries[i].ref != 0 {
			u.refs.entries[i].ref += 1000
		}
	}
	u.refs.mu.Unlock()
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
