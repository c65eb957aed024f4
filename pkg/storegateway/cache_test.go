package storegateway

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestChunkCache_EvictsLeastRecentlyUsedWithinBudget(t *testing.T) {
	c := newChunkCache(3*(100+entryOverhead), prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "s"}))
	data := make([]byte, 100)
	for i := range 3 {
		c.put(chunkKey{block: "b", ref: uint64(i)}, data)
	}
	// Touch 0 so 1 is the least recently used.
	if _, ok := c.get(chunkKey{block: "b", ref: 0}); !ok {
		t.Fatal("entry 0 missing")
	}
	c.put(chunkKey{block: "b", ref: 3}, data)
	if _, ok := c.get(chunkKey{block: "b", ref: 1}); ok {
		t.Error("entry 1 should have been evicted")
	}
	for _, ref := range []uint64{0, 2, 3} {
		if _, ok := c.get(chunkKey{block: "b", ref: ref}); !ok {
			t.Errorf("entry %d missing", ref)
		}
	}
	if c.bytes > c.maxBytes {
		t.Errorf("cache holds %d bytes, budget %d", c.bytes, c.maxBytes)
	}
	c.put(chunkKey{block: "big", ref: 0}, make([]byte, 10_000))
	if _, ok := c.get(chunkKey{block: "big", ref: 0}); ok {
		t.Error("entry larger than the budget was cached")
	}
	c.dropBlock("b")
	if len(c.items) != 0 || c.bytes != 0 {
		t.Errorf("dropBlock left %d items, %d bytes", len(c.items), c.bytes)
	}
}
