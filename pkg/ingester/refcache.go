package ingester

import (
	"hash/maphash"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// refCache maps the labels of a tenant's head series to their series reference, like
// Prometheus' scrape cache does for scraped series: a push of a known series passes
// the reference to Append, which then skips building a labels.Labels from the request
// and the head's lookup by label hash (hashing, a map probe and a labels comparison
// under a stripe lock).
//
// Entries are keyed by a hash of the request's labels and hold the labels.Labels the
// head stores for the series (for a series created by a push they share the head's
// memory), so a hit is verified by comparing labels: a hash collision only costs the
// slow path. Entries of series the head garbage-collects are removed through the
// SeriesLifecycleCallback (seriesLimiter.PostDeletion); a stale reference would anyway
// only make Append fall back to the lookup by the (correct) cached labels.
type refCache struct {
	seed   maphash.Seed
	shards [refCacheShards]refCacheShard
}

const refCacheShards = 32

type refCacheShard struct {
	mu sync.RWMutex
	m  map[uint64]refEntry
}

type refEntry struct {
	ref  storage.SeriesRef
	lset labels.Labels
}

func newRefCache() *refCache {
	c := &refCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = map[uint64]refEntry{}
	}
	return c
}

// hashPrompb hashes ls as hashLabels hashes the equal labels.Labels. ok is false when
// ls is not in the canonical form the head stores (names strictly increasing, no empty
// values); such series are not cached.
func (c *refCache) hashPrompb(ls []prompb.Label) (h uint64, ok bool) {
	var mh maphash.Hash
	mh.SetSeed(c.seed)
	for i, l := range ls {
		if l.Value == "" || (i > 0 && ls[i-1].Name >= l.Name) {
			return 0, false
		}
		mh.WriteString(l.Name)
		mh.WriteByte(0xff)
		mh.WriteString(l.Value)
		mh.WriteByte(0xff)
	}
	return mh.Sum64(), len(ls) > 0
}

func (c *refCache) hashLabels(lset labels.Labels) uint64 {
	var mh maphash.Hash
	mh.SetSeed(c.seed)
	lset.Range(func(l labels.Label) {
		mh.WriteString(l.Name)
		mh.WriteByte(0xff)
		mh.WriteString(l.Value)
		mh.WriteByte(0xff)
	})
	return mh.Sum64()
}

// get returns the cached reference and labels of ls (hashed to h by hashPrompb).
func (c *refCache) get(h uint64, ls []prompb.Label) (refEntry, bool) {
	s := &c.shards[h%refCacheShards]
	s.mu.RLock()
	e, ok := s.m[h]
	s.mu.RUnlock()
	if !ok || !equalPrompbLabels(ls, e.lset) {
		return refEntry{}, false
	}
	return e, true
}

func (c *refCache) put(h uint64, ref storage.SeriesRef, lset labels.Labels) {
	s := &c.shards[h%refCacheShards]
	s.mu.Lock()
	s.m[h] = refEntry{ref: ref, lset: lset}
	s.mu.Unlock()
}

// deleted drops the entries of series the head removed.
func (c *refCache) deleted(series map[chunks.HeadSeriesRef]labels.Labels) {
	for ref, lset := range series {
		h := c.hashLabels(lset)
		s := &c.shards[h%refCacheShards]
		s.mu.Lock()
		if e, ok := s.m[h]; ok && e.ref == storage.SeriesRef(ref) {
			delete(s.m, h)
		}
		s.mu.Unlock()
	}
}

func (c *refCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

func equalPrompbLabels(ls []prompb.Label, lset labels.Labels) bool {
	i, eq := 0, true
	lset.Range(func(l labels.Label) {
		if !eq {
			return
		}
		if i >= len(ls) || ls[i].Name != l.Name || ls[i].Value != l.Value {
			eq = false
		}
		i++
	})
	return eq && i == len(ls)
}
