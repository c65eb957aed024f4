package storegateway

import (
	"container/list"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// indexLRU bounds the bytes of downloaded index files kept on local disk. Blocks whose
// index is least recently used are evicted (reader closed, file deleted) once the total
// exceeds maxBytes, and download their index again on their next query. An index in use by
// a query is never evicted; eviction is retried when it is released, so the budget can be
// exceeded only by the indexes that running queries hold. maxBytes <= 0 means no bound.
type indexLRU struct {
	maxBytes int64

	mtx   sync.Mutex
	bytes int64
	ll    *list.List // of *remoteBlock, front = most recently used

	size      prometheus.Gauge
	evictions prometheus.Counter
}

func newIndexLRU(maxBytes int64, size prometheus.Gauge, evictions prometheus.Counter) *indexLRU {
	return &indexLRU{maxBytes: maxBytes, ll: list.New(), size: size, evictions: evictions}
}

// add records a freshly loaded index and evicts others if the budget is exceeded.
func (c *indexLRU) add(b *remoteBlock, bytes int64) {
	c.mtx.Lock()
	if b.lruElem == nil {
		b.lruElem = c.ll.PushFront(b)
		b.lruBytes = bytes
		c.bytes += bytes
	} else {
		c.ll.MoveToFront(b.lruElem)
	}
	c.mtx.Unlock()
	c.evict(b)
}

// touch marks b's index as used.
func (c *indexLRU) touch(b *remoteBlock) {
	c.mtx.Lock()
	if b.lruElem != nil {
		c.ll.MoveToFront(b.lruElem)
	}
	c.mtx.Unlock()
}

// remove forgets b (its index was closed for good).
func (c *indexLRU) remove(b *remoteBlock) {
	c.mtx.Lock()
	c.removeLocked(b)
	c.mtx.Unlock()
}

func (c *indexLRU) removeLocked(b *remoteBlock) {
	if b.lruElem == nil {
		return
	}
	c.ll.Remove(b.lruElem)
	b.lruElem = nil
	c.bytes -= b.lruBytes
	c.size.Set(float64(c.bytes))
}

// evict drops least recently used indexes that are not in use until the total fits the
// budget. keep (may be nil) is never evicted: it was just loaded for a query.
func (c *indexLRU) evict(keep *remoteBlock) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	for e := c.ll.Back(); e != nil && c.maxBytes > 0 && c.bytes > c.maxBytes; {
		b := e.Value.(*remoteBlock)
		prev := e.Prev()
		if b != keep && b.evictIndex() {
			c.removeLocked(b)
			c.evictions.Inc()
		}
		e = prev
	}
	c.size.Set(float64(c.bytes))
}
