package storegateway

import (
	"container/list"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// chunkCache is a byte-bounded LRU of raw chunk bytes, shared by all blocks. It bounds the
// memory the store-gateway spends on chunk data regardless of bucket size.
type chunkCache struct {
	maxBytes int64

	mtx   sync.Mutex
	bytes int64
	ll    *list.List // front = most recently used
	items map[chunkKey]*list.Element

	hits, misses prometheus.Counter
	size         prometheus.Gauge
}

type chunkKey struct {
	block string // tenant/ULID
	ref   uint64
}

type cacheEntry struct {
	key  chunkKey
	data []byte // encoding byte followed by the chunk data
	// chk is data decoded, made on the first getChunk: chunks are immutable, so every
	// query shares one instead of decoding (allocating) a chunk per read.
	chk chunkenc.Chunk
}

// entryOverhead approximates the per-entry bookkeeping (map + list element) so that many
// tiny chunks cannot exceed the budget by much.
const entryOverhead = 96

func newChunkCache(maxBytes int64, hits, misses prometheus.Counter, size prometheus.Gauge) *chunkCache {
	return &chunkCache{maxBytes: maxBytes, ll: list.New(), items: map[chunkKey]*list.Element{}, hits: hits, misses: misses, size: size}
}

func (c *chunkCache) get(k chunkKey) ([]byte, bool) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		c.hits.Inc()
		return e.Value.(*cacheEntry).data, true
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
	c.ll.MoveToFront(e)
	c.hits.Inc()
	ent := e.Value.(*cacheEntry)
	if ent.chk == nil {
		chk, err := chunkenc.FromData(chunkenc.Encoding(ent.data[0]), ent.data[1:])
		if err != nil {
			return nil, true, err
		}
		ent.chk = chk
	}
	return ent.chk, true, nil
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
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, data: data})
	c.bytes += cost
	for c.bytes > c.maxBytes {
		c.removeElement(c.ll.Back())
	}
	c.size.Set(float64(c.bytes))
}

// dropBlock forgets every chunk of a block that left the bucket.
func (c *chunkCache) dropBlock(block string) {
	c.mtx.Lock()
	defer c.mtx.Unlock()
	for k, e := range c.items {
		if k.block == block {
			c.removeElement(e)
		}
	}
	c.size.Set(float64(c.bytes))
}

func (c *chunkCache) removeElement(e *list.Element) {
	ent := e.Value.(*cacheEntry)
	c.ll.Remove(e)
	delete(c.items, ent.key)
	c.bytes -= int64(len(ent.data)) + entryOverhead
}
