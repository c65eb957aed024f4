package storegateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestChunkCache_EvictsLeastRecentlyUsedWithinBudget(t *testing.T) {
	c := newChunkCache(3*(100+entryOverhead), prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "s"}))
	data := make([]byte, 100)
	for i := range 3 {
		c.put(chunkKey{block: 1, ref: uint64(i)}, data)
	}
	// Touch 0 so 1 is the least recently used.
	if _, ok := c.get(chunkKey{block: 1, ref: 0}); !ok {
		t.Fatal("entry 0 missing")
	}
	c.put(chunkKey{block: 1, ref: 3}, data)
	if _, ok := c.get(chunkKey{block: 1, ref: 1}); ok {
		t.Error("entry 1 should have been evicted")
	}
	for _, ref := range []uint64{0, 2, 3} {
		if _, ok := c.get(chunkKey{block: 1, ref: ref}); !ok {
			t.Errorf("entry %d missing", ref)
		}
	}
	if c.bytes > c.maxBytes {
		t.Errorf("cache holds %d bytes, budget %d", c.bytes, c.maxBytes)
	}
	c.put(chunkKey{block: 2, ref: 0}, make([]byte, 10_000))
	if _, ok := c.get(chunkKey{block: 2, ref: 0}); ok {
		t.Error("entry larger than the budget was cached")
	}
	c.put(chunkKey{block: 3, ref: 0}, data)
	c.dropBlock(1)
	if _, ok := c.get(chunkKey{block: 3, ref: 0}); !ok || len(c.items) != 1 || c.bytes != 100+entryOverhead {
		t.Errorf("dropBlock of another block left %d items, %d bytes, block 3 cached: %v", len(c.items), c.bytes, ok)
	}
	c.dropBlock(3)
	if len(c.items) != 0 || c.bytes != 0 || c.head != nil || c.tail != nil {
		t.Errorf("dropBlock left %d items, %d bytes", len(c.items), c.bytes)
	}
}

func TestChunkCache_RecencyListMatchesItems(t *testing.T) {
	c := newChunkCache(10*(10+entryOverhead), prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "s"}))
	data := make([]byte, 10)
	for i := range 40 {
		c.put(chunkKey{block: 1, ref: uint64(i)}, data)
		c.get(chunkKey{block: 1, ref: uint64(i / 2)}) // some hits, some misses
		c.get(chunkKey{block: 1, ref: uint64(i - 3)})
	}
	n := 0
	var prev *cacheEntry
	for e := c.head; e != nil; e = e.next {
		if e.prev != prev || c.items[e.key] != e {
			t.Fatalf("list entry %v inconsistent", e.key)
		}
		prev, n = e, n+1
	}
	if prev != c.tail || n != len(c.items) || n != 10 {
		t.Fatalf("list has %d entries (tail ok: %v), map %d, want 10", n, prev == c.tail, len(c.items))
	}
	// The most recent put and the entries read since are kept.
	for _, ref := range []uint64{39, 38, 36} {
		if _, ok := c.items[chunkKey{block: 1, ref: ref}]; !ok {
			t.Errorf("recently used entry %d evicted", ref)
		}
	}
}
