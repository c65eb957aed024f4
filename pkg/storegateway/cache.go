package storegateway

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// chunkCache is a byte-bounded LRU of raw chunk bytes, shared by all blocks. It bounds the
// memory the store-gateway spends on chunk data regardless of bucket size.
//
// Every chunk a query reads goes through it (a day of 2h blocks is twelve lookups per
// series), so entries are keyed by two integers rather than the block's name, and the
// recency list is threaded through the entries instead of a container/list of its own
// (one allocation per cached chunk instead of two).
type chunkCache struct {
	maxBytes int64

	mtx   sync.Mutex
	bytes int64
	items map[chunkKey]*cacheEntry
	// head is the most and tail the least recently used entry.
	head, tail *cacheEntry

	hits, misses prometheus.Counter
	size         prometheus.Gauge
}

type chunkKey struct {
	block uint64 // remoteBlock.cacheID, unique per loaded block
	ref   uint64
}

type cacheEntry struct {
	key  chunkKey
	data []byte // encoding byte followed by the chunk data
	// chk is data decoded, made on the first getChunk: chunks are immutable, so every
	// query shares one instead of decoding (allocating) a chunk per read.
	chk        chunkenc.Chunk
	prev, next *cacheEntry // towards head, towards tail
}

// entryOverhead approximates the per-entry bookkeeping (map slot + entry) so that many
// tiny chunks cannot exceed the budget by much.
const entryOverhead = 96

func newChunkCache(maxBytes int64, hits, misses prometheus.Counter, size prometheus.Gauge) *chunkCache {
	return &chunkCache{maxBytes: maxBytes, items: map[chunkKey]*cacheEntry{}, hits: hits, misses: misses, size: size}
}

func (c *chunkCache) get(k chunkKey) ([]byte, bool) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if e, ok := c.items[k]; ok {
		c.moveToFront(e)
		c.hits.Inc()
		return e.data, true
	}
	c.misses.Inc()
	return nil, false
}

// getChunk is get returning the decoded chunk.
func (c *chunkCache) getChunk(k chunkKey) (chunkenc.Chunk, bool, error) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	e, ok := c.items[k]
	if !ok {
		c.misses.Inc()
		return nil, false, nil
	}
	c.moveToFront(e)
	c.hits.Inc()
	if e.chk == nil {
		chk, err := chunkenc.FromData(chunkenc.Encoding(e.data[0]), e.data[1:])
		if err != nil {
			return nil, true, err
		}
		e.chk = chk
	}
	return e.chk, true, nil
}

func (c *chunkCache) put(k chunkKey, data []byte) {
	cost := int64(len(data)) + entryOverhead
	if c.maxBytes <= 0 || cost > c.maxBytes {
		return
	}
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	e := &cacheEntry{key: k, data: data}
	c.items[k] = e
	c.pushFront(e)
	c.bytes += cost
	for c.bytes > c.maxBytes {
		c.remove(c.tail)
	}
	c.size.Set(float64(c.bytes))
}

// dropBlock forgets every chunk of a block that left the bucket.
func (c *chunkCache) dropBlock(block uint64) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	for k, e := range c.items {
		if k.block == block {
			c.remove(e)
		}
	}
	c.size.Set(float64(c.bytes))
}

func (c *chunkCache) pushFront(e *cacheEntry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *chunkCache) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (c *chunkCache) moveToFront(e *cacheEntry) {
	if c.head == e {
		return
	}
	c.unlink(e)
	c.pushFront(e)
}

func (c *chunkCache) remove(e *cacheEntry) {
	c.unlink(e)
	delete(c.items, e.key)
	c.bytes -= int64(len(e.data)) + entryOverhead
}
