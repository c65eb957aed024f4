package ingester

import (
	"context"
	"fmt"
	"sync"
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

// TestRefCacheConcurrentRounds pushes rounds of series in changing batches and orders
// from concurrent senders, as remote-write shards do, and checks that every sample
// landed in its own series.
func TestRefCacheConcurrentRounds(t *testing.T) {
	ing := startIngester(t, testConfig(t), nil, nil)
	const nSeries, rounds, senders = 2000, 6, 4
	lsets := benchSeries(nSeries)
	base := time.Now().Add(-time.Hour).UnixMilli()
	for r := 0; r < rounds; r++ {
		// Each round: a different rotation and batch size, split over the senders.
		order := make([]int, nSeries)
		for i := range order {
			order[i] = (i*7 + r*131) % nSeries
		}
		batch := 100 + r*150
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for s := 0; s < senders; s++ {
			wg.Add(1)
			go func(s int) {
				defer wg.Done()
				for lo := s * batch; lo < nSeries; lo += senders * batch {
					req := &prompb.WriteRequest{}
					for _, i := range order[lo:min(lo+batch, nSeries)] {
						req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
							Labels:  lsets[i],
							Samples: []prompb.Sample{{Timestamp: base + int64(r)*15_000, Value: float64(i*100 + r)}},
						})
					}
					resp, err := ing.Push(ctxFor("t1"), req)
					if err == nil && (len(resp.Rejections) != 0 || resp.SamplesWritten != int64(len(req.Timeseries))) {
						err = fmt.Errorf("push: %s", resp)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}(s)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	got := querySeries(t, serveGRPC(t, ing), "t1", base, base+int64(rounds)*15_000)
	if len(got) != nSeries {
		t.Fatalf("%d series stored, want %d", len(got), nSeries)
	}
	idx := map[string]int{}
	for i, ls := range lsets {
		idx[labelsString(ls)] = i
	}
	for _, s := range got {
		i, ok := idx[s.lset.String()]
		if !ok || len(s.samples) != rounds {
			t.Fatalf("series %s: known %v, %d samples", s.lset, ok, len(s.samples))
		}
		for r, smp := range s.samples {
			if smp.t != base+int64(r)*15_000 || smp.v != float64(i*100+r) {
				t.Fatalf("series %s sample %d = %+v", s.lset, r, smp)
			}
		}
	}
}

func labelsString(ls []prompb.Label) string {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels().String()
}
