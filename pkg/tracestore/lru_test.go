package tracestore

import "testing"

func TestLRUStaysWithinBudget(t *testing.T) {
	c := newLRU(100)
	c.add("a", 1, 40)
	c.add("b", 2, 40)
	if _, ok := c.get("a"); !ok { // a becomes most recently used
		t.Fatal("a missing")
	}
	c.add("c", 3, 40) // evicts b, the least recently used
	if _, ok := c.get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	for _, k := range []string{"a", "c"} {
		if _, ok := c.get(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	c.add("huge", 4, 101) // larger than the cache: not kept, nothing evicted
	if _, ok := c.get("huge"); ok || c.len() != 2 {
		t.Fatalf("oversized entry kept or evicted others (len %d)", c.len())
	}
	c.add("a", 5, 90) // replacing an entry re-accounts its size
	if v, ok := c.get("a"); !ok || v.(int) != 5 || c.len() != 1 {
		t.Fatalf("after replace: %v %v len %d", v, ok, c.len())
	}
}
