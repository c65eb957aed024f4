package tracestore

import (
	"container/list"
	"sync"
)

// lruCache is a byte-bounded LRU for immutable block files (bloom filters,
// indexes, summaries, Parquet footers). Entries are never mutated after
// insertion, so callers may share them.
type lruCache struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	ll       *list.List
	items    map[string]*list.Element
}

type lruEntry struct {
	key  string
	val  any
	size int64
}

func newLRU(maxBytes int64) *lruCache {
	return &lruCache{maxBytes: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

func (c *lruCache) get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(*lruEntry).val, true
	}
	return nil, false
}

// add inserts val; values larger than the whole cache are not kept.
func (c *lruCache) add(key string, val any, size int64) {
	if size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.bytes -= e.Value.(*lruEntry).size
		c.ll.Remove(e)
	}
	c.items[key] = c.ll.PushFront(&lruEntry{key: key, val: val, size: size})
	c.bytes += size
	for c.bytes > c.maxBytes {
		last := c.ll.Back()
		ent := last.Value.(*lruEntry)
		c.ll.Remove(last)
		delete(c.items, ent.key)
		c.bytes -= ent.size
	}
}

func (c *lruCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
