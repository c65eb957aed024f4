package tracestore

import (
	"errors"
	"fmt"
	"sort"
)

// blockPostingsFile maps each (service, span name, span kind) of a block to
// the traces containing such a span, so searches by operation or kind are
// answered without scanning spans. Format:
//
//	"VTPL" | version byte (1) | uvarint(n) |
//	n × (str service, str name, uvarint kind, uvarint(count), count × uvarint(delta of trace ordinal))
//
// A trace ordinal is the trace's row number in summaries.parquet (both are
// sorted by trace ID). Costs about one byte per distinct operation per trace.
const blockPostingsFile = "postings.bin"

const postingsMagic = "VTPL"

type opKey struct {
	service, name string
	kind          int32
}

type postings map[opKey][]uint32

// add records that trace ordinal ord has a span with key k. Ordinals arrive
// in increasing order, so de-duplicating against the last entry suffices.
func (p postings) add(k opKey, ord uint32) {
	list := p[k]
	if n := len(list); n > 0 && list[n-1] == ord {
		return
	}
	p[k] = append(list, ord)
}

func (p postings) marshal() []byte {
	keys := make([]opKey, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.service != b.service {
			return a.service < b.service
		}
		if a.name != b.name {
			return a.name < b.name
		}
		return a.kind < b.kind
	})
	e := encoder{buf: append([]byte(postingsMagic), 1)}
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k.service)
		e.str(k.name)
		e.uvarint(uint64(k.kind))
		list := p[k]
		e.uvarint(uint64(len(list)))
		prev := uint32(0)
		for _, o := range list {
			e.uvarint(uint64(o - prev))
			prev = o
		}
	}
	return e.buf
}

func unmarshalPostings(b []byte) (postings, error) {
	if len(b) < 5 || string(b[:4]) != postingsMagic {
		return nil, errors.New("postings: bad magic")
	}
	if b[4] != 1 {
		return nil, fmt.Errorf("postings: unsupported version %d", b[4])
	}
	d := decoder{buf: b[5:]}
	n := d.count()
	p := make(postings, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := opKey{service: d.str(), name: d.str(), kind: int32(d.uvarint())}
		c := d.count()
		list := make([]uint32, 0, c)
		prev := uint64(0)
		for j := 0; j < c && d.err == nil; j++ {
			prev += d.uvarint()
			list = append(list, uint32(prev))
		}
		p[k] = list
	}
	if d.err != nil {
		return nil, fmt.Errorf("postings: %w", d.err)
	}
	return p, nil
}

// size approximates the memory held, for the cache.
func (p postings) size() int64 {
	n := int64(0)
	for k, l := range p {
		n += int64(len(k.service)+len(k.name)) + 48 + 4*int64(len(l))
	}
	return n
}

// matching returns the sorted trace ordinals with a span matching the
// service/operation/kind conditions of m (attributes are not considered).
func (p postings) matching(m *spanMatcher) []uint32 {
	set := map[uint32]struct{}{}
	for k, list := range p {
		if m.req.Service != "" && k.service != m.req.Service {
			continue
		}
		if m.req.Operation != "" && k.name != m.req.Operation {
			continue
		}
		if m.kind >= 0 && k.kind != m.kind {
			continue
		}
		for _, o := range list {
			set[o] = struct{}{}
		}
	}
	out := make([]uint32, 0, len(set))
	for o := range set {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
