package tracestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// blockStore answers queries from the trace blocks of the bucket. Block lists
// are synced per tenant at most once per syncInterval (lazily, on query), and
// the small per-block files are kept in a bounded LRU.
type blockStore struct {
	bkt          objstore.Bucket // root bucket
	syncInterval time.Duration
	cache        *lruCache
	logger       *slog.Logger
	now          func() time.Time

	mu      sync.Mutex
	tenants map[string]*tenantBlocks
}

type tenantBlocks struct {
	mu     sync.Mutex // serialises syncs of one tenant
	synced time.Time
	metas  []*BlockMeta // newest (by MaxTime) first
}

func newBlockStore(bkt objstore.Bucket, syncInterval time.Duration, cacheBytes int64, logger *slog.Logger) *blockStore {
	return &blockStore{
		bkt: bkt, syncInterval: syncInterval, cache: newLRU(cacheBytes), logger: logger, now: time.Now,
		tenants: map[string]*tenantBlocks{},
	}
}

// markerPath is where the compactor puts a copy of each deletion mark, so one
// listing tells the readers which blocks to ignore.
func markerPath(id ulid.ULID) string {
	return path.Join(tracesDir, "markers", id.String()+"-"+blockDeletionMark)
}

func (s *blockStore) tenant(tenant string) *tenantBlocks {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tenants[tenant]
	if tb == nil {
		tb = &tenantBlocks{}
		s.tenants[tenant] = tb
	}
	return tb
}

func (s *blockStore) knownTenants() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedKeys(s.tenants)
}

// blocks returns the tenant's complete, not-deleted blocks, re-listing the
// bucket when the cached list is older than the sync interval.
func (s *blockStore) blocks(ctx context.Context, tenant string) ([]*BlockMeta, error) {
	tb := s.tenant(tenant)
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if !tb.synced.IsZero() && s.now().Sub(tb.synced) < s.syncInterval {
		return tb.metas, nil
	}
	return s.syncLocked(ctx, tenant, tb)
}

// refresh re-lists the tenant's blocks unconditionally.
func (s *blockStore) refresh(ctx context.Context, tenant string) ([]*BlockMeta, error) {
	tb := s.tenant(tenant)
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return s.syncLocked(ctx, tenant, tb)
}

func (s *blockStore) syncLocked(ctx context.Context, tenant string, tb *tenantBlocks) ([]*BlockMeta, error) {
	metas, err := s.syncTenant(ctx, tenant, tb.metas)
	if err != nil {
		return nil, err
	}
	tb.metas, tb.synced = metas, s.now()
	return metas, nil
}

func (s *blockStore) syncTenant(ctx context.Context, tenant string, known []*BlockMeta) ([]*BlockMeta, error) {
	tbkt := bucket.ForTenant(s.bkt, tenant)
	deleted := map[ulid.ULID]bool{}
	err := tbkt.Iter(ctx, path.Join(tracesDir, "markers")+"/", func(name string) error {
		base := path.Base(name)
		if id, err := ulid.Parse(strings.TrimSuffix(base, "-"+blockDeletionMark)); err == nil {
			deleted[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list deletion marks of tenant %s: %w", tenant, err)
	}
	byID := map[ulid.ULID]*BlockMeta{}
	for _, m := range known {
		byID[m.ULID] = m
	}
	var metas []*BlockMeta
	err = tbkt.Iter(ctx, tracesDir+"/", func(name string) error {
		id, err := ulid.Parse(path.Base(strings.TrimSuffix(name, "/")))
		if err != nil || deleted[id] {
			return nil // markers dir, stray files, deleted blocks
		}
		if m, ok := byID[id]; ok { // meta.json is immutable
			metas = append(metas, m)
			return nil
		}
		m, err := readMeta(ctx, tbkt, id)
		if err != nil {
			if isNotFound(tbkt, err) {
				return nil // upload in progress: meta.json comes last
			}
			return err
		}
		metas = append(metas, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list trace blocks of tenant %s: %w", tenant, err)
	}
	sort.Slice(metas, func(i, j int) bool {
		if metas[i].MaxTime != metas[j].MaxTime {
			return metas[i].MaxTime > metas[j].MaxTime
		}
		return metas[i].ULID.Compare(metas[j].ULID) < 0
	})
	return metas, nil
}

func readMeta(ctx context.Context, bkt objstore.BucketReader, id ulid.ULID) (*BlockMeta, error) {
	name := path.Join(tracesDir, id.String(), blockMetaFile)
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	var m BlockMeta
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode %s: %v", name, err)
	}
	if m.Version != blockFormatVersion {
		return nil, fmt.Errorf("%s: unsupported block version %d", name, m.Version)
	}
	return &m, nil
}

// cached loads a block file through the LRU, decoding it with decode.
func (s *blockStore) cached(ctx context.Context, tenant string, m *BlockMeta, file string, decode func([]byte) (any, error)) (any, error) {
	key := tenant + "/" + m.ULID.String() + "/" + file
	if v, ok := s.cache.get(key); ok {
		return v, nil
	}
	b, err := readObject(ctx, bucket.ForTenant(s.bkt, tenant), path.Join(tracesDir, m.ULID.String(), file))
	if err != nil {
		return nil, err
	}
	v, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("block %s %s: %w", m.ULID, file, err)
	}
	s.cache.add(key, v, int64(len(b))*2) // decoded forms are roughly twice the encoded size
	return v, nil
}

func (s *blockStore) bloom(ctx context.Context, tenant string, m *BlockMeta) (*bloomFilter, error) {
	v, err := s.cached(ctx, tenant, m, blockBloomFile, func(b []byte) (any, error) { return unmarshalBloom(b) })
	if err != nil {
		return nil, err
	}
	return v.(*bloomFilter), nil
}

func (s *blockStore) index(ctx context.Context, tenant string, m *BlockMeta) (*blockIndex, error) {
	v, err := s.cached(ctx, tenant, m, blockIndexFile, func(b []byte) (any, error) {
		var ix blockIndex
		err := json.Unmarshal(b, &ix)
		return &ix, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*blockIndex), nil
}

func (s *blockStore) summaries(ctx context.Context, tenant string, m *BlockMeta) ([]TraceSummary, error) {
	v, err := s.cached(ctx, tenant, m, blockSummariesFile, func(b []byte) (any, error) {
		rows, err := parquet.Read[summaryRow](bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, err
		}
		out := make([]TraceSummary, len(rows))
		for i, r := range rows {
			out[i] = r.summary()
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]TraceSummary), nil
}

func (s *blockStore) postings(ctx context.Context, tenant string, m *BlockMeta) (postings, error) {
	v, err := s.cached(ctx, tenant, m, blockPostingsFile, func(b []byte) (any, error) { return unmarshalPostings(b) })
	if err != nil {
		return nil, err
	}
	return v.(postings), nil
}

func (s *blockStore) dependencies(ctx context.Context, tenant string, m *BlockMeta) ([]DependencyLink, error) {
	v, err := s.cached(ctx, tenant, m, blockDepsFile, func(b []byte) (any, error) {
		var links []DependencyLink
		err := json.Unmarshal(b, &links)
		return links, err
	})
	if err != nil {
		return nil, err
	}
	return v.([]DependencyLink), nil
}

// dataFile returns the block's opened data file, cached so its footer is
// fetched and parsed once.
func (s *blockStore) dataFile(ctx context.Context, tenant string, m *BlockMeta, ix *blockIndex) (*parquet.File, *blockReaderAt, error) {
	key := tenant + "/" + m.ULID.String()
	type opened struct {
		f *parquet.File
		r *blockReaderAt
	}
	if v, ok := s.cache.get(key + "/file"); ok {
		o := v.(opened)
		return o.f, o.r, nil
	}
	size := m.fileSize(blockDataFile)
	if size < ix.FooterOffset {
		return nil, nil, fmt.Errorf("block %s: footer offset %d beyond data size %d", m.ULID, ix.FooterOffset, size)
	}
	tbkt := bucket.ForTenant(s.bkt, tenant)
	name := path.Join(tracesDir, m.ULID.String(), blockDataFile)
	footer, err := readRange(ctx, tbkt, name, ix.FooterOffset, size-ix.FooterOffset)
	if err != nil {
		return nil, nil, err
	}
	r := &blockReaderAt{bkt: tbkt, name: name, ix: ix, footer: footer, cache: s.cache, key: key}
	f, err := openDataFile(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("block %s: %w", m.ULID, err)
	}
	// The parsed metadata is several times the encoded footer.
	s.cache.add(key+"/file", opened{f, r}, int64(len(footer))*8)
	return f, r, nil
}

func inRange(m *BlockMeta, start, end time.Time) bool {
	return overlapsNanos(m.MinTime, m.MaxTime, start, end)
}

// traceRows returns the rows of one trace from every block that has it.
// The bloom filter rules out most blocks without touching the data file;
// the index then names the single row group to fetch.
func (s *blockStore) traceRows(ctx context.Context, tenant string, id TraceID, start, end time.Time) ([]spanRow, error) {
	metas, err := s.blocks(ctx, tenant)
	if err != nil {
		return nil, err
	}
	var out []spanRow
	for _, m := range metas {
		if !inRange(m, start, end) {
			continue
		}
		bf, err := s.bloom(ctx, tenant, m)
		if err != nil {
			return nil, err
		}
		if !bf.mayContain(id) {
			continue
		}
		ix, err := s.index(ctx, tenant, m)
		if err != nil {
			return nil, err
		}
		groups := ix.rowGroupsFor(id)
		if len(groups) == 0 {
			continue
		}
		f, r, err := s.dataFile(ctx, tenant, m, ix)
		if err != nil {
			return nil, err
		}
		rows, err := readTraceRows(ctx, f, r, groups, id)
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", m.ULID, err)
		}
		out = append(out, rows...)
	}
	return out, nil
}

func (s *blockStore) TraceByID(ctx context.Context, tenant string, id TraceID, start, end time.Time) (ptrace.Traces, bool, error) {
	rows, err := s.traceRows(ctx, tenant, id, start, end)
	if err != nil || len(rows) == 0 {
		return ptrace.NewTraces(), false, err
	}
	sortRows(rows)
	td, err := rowsToTracesChecked(id, dedupSorted(rows))
	return td, err == nil, err
}

// Search scans blocks newest first and stops once no older block can
// contribute to the newest req.Limit results.
func (s *blockStore) Search(ctx context.Context, tenant string, req SearchRequest) ([]TraceSummary, error) {
	metas, err := s.blocks(ctx, tenant)
	if err != nil {
		return nil, err
	}
	limit := limitOf(req)
	m := newSpanMatcher(req)
	found := summarySet{}
	for _, meta := range metas {
		if !inRange(meta, req.Start, req.End) {
			continue
		}
		if len(found) >= limit {
			// Results are ordered by trace start; a block whose spans all
			// end before the oldest kept result cannot displace anything.
			kept := found.sorted(limit)
			if meta.MaxTime < kept[len(kept)-1].Start.UnixNano() {
				break
			}
		}
		ix, err := s.index(ctx, tenant, meta)
		if err != nil {
			return nil, err
		}
		if !ix.mayMatch(&m) {
			continue
		}
		sums, err := s.summaries(ctx, tenant, meta)
		if err != nil {
			return nil, err
		}
		// sel marks, by trace ordinal (summaries and spans share the trace-ID
		// order), the traces still in the running.
		sel := make([]bool, len(sums))
		n := 0
		for i := range sums {
			if matchTrace(req, &sums[i]) {
				sel[i] = true
				n++
			}
		}
		if n == 0 {
			continue
		}
		switch {
		case !m.hasSpanConditions():
		case m.serviceOnly():
			// The summary's service list answers a service-only search
			// without touching the spans.
			for i := range sums {
				sel[i] = sel[i] && containsString(sums[i].Services, req.Service)
			}
		default:
			// Operation/kind conditions: the postings name the traces with
			// such a span. Attribute conditions then need the spans.
			if req.Service != "" || req.Operation != "" || m.kind >= 0 {
				post, err := s.postings(ctx, tenant, meta)
				if err != nil {
					return nil, err
				}
				keep := make([]bool, len(sums))
				for _, o := range post.matching(&m) {
					if int(o) < len(sums) && sel[o] {
						keep[o] = true
					}
				}
				sel = keep
			}
			if len(req.Attributes) > 0 {
				if err := s.matchSpans(ctx, tenant, meta, &m, sums, sel); err != nil {
					return nil, err
				}
			}
		}
		// Only the newest `limit` of a block can ever be returned.
		top := make([]TraceSummary, 0, limit+1)
		for i := range sums {
			if !sel[i] || (len(top) == limit && !summaryBefore(&sums[i], &top[limit-1])) {
				continue
			}
			at := sort.Search(len(top), func(j int) bool { return summaryBefore(&sums[i], &top[j]) })
			top = append(top, TraceSummary{})
			copy(top[at+1:], top[at:])
			top[at] = sums[i]
			if len(top) > limit {
				top = top[:limit]
			}
		}
		for _, t := range top {
			found.add(t)
		}
		found.trim(limit)
	}
	return found.sorted(limit), nil
}

func (s *blockStore) forIndexes(ctx context.Context, tenant string, start, end time.Time, fn func(*BlockMeta, *blockIndex) error) error {
	metas, err := s.blocks(ctx, tenant)
	if err != nil {
		return err
	}
	for _, m := range metas {
		if !inRange(m, start, end) {
			continue
		}
		ix, err := s.index(ctx, tenant, m)
		if err != nil {
			return err
		}
		if err := fn(m, ix); err != nil {
			return err
		}
	}
	return nil
}

// isNotFound unwraps err looking for the bucket's not-found error.
func isNotFound(bkt objstore.BucketReader, err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if bkt.IsObjNotFoundErr(e) {
			return true
		}
	}
	return false
}

// searchRow is the projection of data.parquet that span matching needs;
// parquet-go skips the other columns (IDs, timestamps, events, links).
type searchRow struct {
	TraceID       [16]byte `parquet:"trace_id"`
	Name          string   `parquet:"name"`
	Kind          int32    `parquet:"kind"`
	StatusCode    int32    `parquet:"status_code"`
	StatusMessage string   `parquet:"status_message"`
	Service       string   `parquet:"service"`
	Attrs         []byte   `parquet:"attrs"`
	Resource      []byte   `parquet:"resource"`
}

func containsString(list []string, s string) bool {
	i := sort.SearchStrings(list, s)
	return i < len(list) && list[i] == s
}

// matchSpans clears sel for traces without a span matching every
// span-level condition, scanning the block's span projection. Spans and
// summaries are both sorted by trace ID, so one merge walk pairs them.
func (s *blockStore) matchSpans(ctx context.Context, tenant string, meta *BlockMeta, m *spanMatcher, sums []TraceSummary, sel []bool) error {
	rows, err := s.searchRows(ctx, tenant, meta)
	if err != nil {
		return err
	}
	hit := make([]bool, len(sums))
	j := 0
	for i := range rows {
		for j < len(sums) && compareBytes(sums[j].TraceID[:], rows[i].TraceID[:]) < 0 {
			j++
		}
		if j == len(sums) {
			break
		}
		if sums[j].TraceID != rows[i].TraceID || !sel[j] || hit[j] {
			continue
		}
		r := spanRow{Name: rows[i].Name, Kind: rows[i].Kind, StatusCode: rows[i].StatusCode, StatusMessage: rows[i].StatusMessage,
			Service: rows[i].Service, Attrs: rows[i].Attrs, Resource: rows[i].Resource}
		hit[j] = m.match(&r)
	}
	copy(sel, hit)
	return nil
}

// searchRows returns the search projection of a block's spans, cached
// because users tend to refine a search over the same time range.
func (s *blockStore) searchRows(ctx context.Context, tenant string, m *BlockMeta) ([]searchRow, error) {
	key := tenant + "/" + m.ULID.String() + "/search"
	if v, ok := s.cache.get(key); ok {
		return v.([]searchRow), nil
	}
	data, err := readObject(ctx, bucket.ForTenant(s.bkt, tenant), path.Join(tracesDir, m.ULID.String(), blockDataFile))
	if err != nil {
		return nil, err
	}
	rows, err := parquet.Read[searchRow](bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("block %s: decode data file: %w", m.ULID, err)
	}
	size := int64(0)
	for i := range rows {
		// Struct, string and slice headers plus the payloads.
		size += 120 + int64(len(rows[i].Name)+len(rows[i].StatusMessage)+len(rows[i].Service)+len(rows[i].Attrs)+len(rows[i].Resource))
	}
	s.cache.add(key, rows, size)
	return rows, nil
}
