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
// Entries are found by a hash of the request's labels and hold the labels.Labels the
// head stores for the series (for a series created by a push they share the head's
// memory), so a hit is verified by comparing labels: a hash collision only costs the
// slow path. Entries of series the head garbage-collects are removed through the
// SeriesLifecycleCallback (seriesLimiter.PostDeletion); a stale reference would anyway
// only make Append fall back to the lookup by the (correct) cached labels.
//
// Senders push the same series in the same order again and again (one scrape after
// the other), so each entry remembers which entry followed it in the last push that had
// it: a lookup first tries that prediction, which is next door in memory, before the
// random access into the hash index. A push looks all its series up under one read
// lock, and takes the write lock only when it has something to add or re-link.
type refCache struct {
	seed maphash.Seed

	mu      sync.RWMutex
	index   map[uint64]int32 // hash -> entries index
	entries []refEntry
	free    []int32 // unused entries
}

type refEntry struct {
	hash uint64
	ref  storage.SeriesRef // 0: unused
	lset labels.Labels
	next int32 // predicted following entry, -1 if none
}

// refLookup is what a push learns about one of its series.
type refLookup struct {
	hash      uint64
	cacheable bool
	idx       int32             // entry found, -1 if none
	ref       storage.SeriesRef // cached reference, 0 if none
	lset      labels.Labels     // cached labels
	// Set by the push after appending: the reference and labels to cache.
	newRef  storage.SeriesRef
	newLset labels.Labels
}

func newRefCache() *refCache {
	return &refCache{seed: maphash.MakeSeed(), index: map[uint64]int32{}}
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

// lookup fills out[i] for series[i]. It reports whether the push will need update
// (some series not cached, or the order differed from the last time).
func (c *refCache) lookup(series []prompb.TimeSeries, out []refLookup) (needUpdate bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	prev := int32(-1)
	for i := range series {
		l := &out[i]
		*l = refLookup{idx: -1}
		l.hash, l.cacheable = c.hashPrompb(series[i].Labels)
		if !l.cacheable {
			prev = -1
			continue
		}
		idx := int32(-1)
		if prev >= 0 {
			if n := c.entries[prev].next; n >= 0 && c.entries[n].hash == l.hash && c.entries[n].ref != 0 {
				idx = n
			}
		}
		if idx < 0 {
			if prev >= 0 {
				needUpdate = true // re-link prev to this series
			}
			if j, ok := c.index[l.hash]; ok {
				idx = j
			}
		}
		if idx >= 0 && equalPrompbLabels(series[i].Labels, c.entries[idx].lset) {
			l.idx, l.ref, l.lset = idx, c.entries[idx].ref, c.entries[idx].lset
		} else {
			needUpdate = true
		}
		prev = l.idx
	}
	return needUpdate
}

// update caches the references a push learned (out[i].newRef) and links each series
// to the one that followed it.
func (c *refCache) update(out []refLookup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := int32(-1)
	for i := range out {
		l := &out[i]
		if !l.cacheable {
			prev = -1
			continue
		}
		idx := l.idx
		if idx >= 0 && (c.entries[idx].hash != l.hash || c.entries[idx].ref != l.ref) {
			idx = -1 // changed since lookup (deleted or replaced meanwhile)
		}
		if l.newRef != 0 && l.newRef != l.ref {
			idx = c.put(l.hash, l.newRef, l.newLset)
		}
		if prev >= 0 && idx >= 0 {
			c.entries[prev].next = idx
		}
		prev = idx
	}
}

// put stores an entry for hash (replacing the one there) and returns its index.
func (c *refCache) put(hash uint64, ref storage.SeriesRef, lset labels.Labels) int32 {
	if j, ok := c.index[hash]; ok {
		c.entries[j].ref, c.entries[j].lset = ref, lset
		return j
	}
	var j int32
	if n := len(c.free); n > 0 {
		j, c.free = c.free[n-1], c.free[:n-1]
	} else {
		c.entries = append(c.entries, refEntry{})
		j = int32(len(c.entries) - 1)
	}
	c.entries[j] = refEntry{hash: hash, ref: ref, lset: lset, next: -1}
	c.index[hash] = j
	return j
}

// deleted drops the entries of series the head removed.
func (c *refCache) deleted(series map[chunks.HeadSeriesRef]labels.Labels) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ref, lset := range series {
		h := c.hashLabels(lset)
		j, ok := c.index[h]
		if !ok || c.entries[j].ref != storage.SeriesRef(ref) {
			continue
		}
		delete(c.index, h)
		c.entries[j] = refEntry{next: -1}
		c.free = append(c.free, j)
	}
}

func (c *refCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.index)
}

var refLookupPool = sync.Pool{New: func() any { return new([]refLookup) }}

func getRefLookups(n int) *[]refLookup {
	p := refLookupPool.Get().(*[]refLookup)
	if cap(*p) < n {
		*p = make([]refLookup, n)
	}
	*p = (*p)[:n]
	return p
}

func putRefLookups(p *[]refLookup) {
	clear(*p) // drop label references
	refLookupPool.Put(p)
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
