package tracestore

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/parquet-go/parquet-go"
	"github.com/thanos-io/objstore"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Block file names inside <tenant>/traces/<ULID>/. See docs/trace-block-format.md.
const (
	blockDataFile      = "data.parquet"
	blockBloomFile     = "bloom"
	blockIndexFile     = "index.json"
	blockSummariesFile = "summaries.parquet"
	blockDepsFile      = "dependencies.json"
	blockMetaFile      = "meta.json"
	blockDeletionMark  = "deletion-mark.json"
	tracesDir          = "traces"
	blockFormatVersion = 1
	bloomFalsePositive = 0.01
)

// BlockMeta is a block's meta.json. It is uploaded last: a block without it
// is incomplete and ignored by readers (and deleted by the compactor once old).
type BlockMeta struct {
	Version int       `json:"version"`
	ULID    ulid.ULID `json:"ulid"`
	Tenant  string    `json:"tenant"`
	// MinTime/MaxTime are the earliest span start and latest span end, unix ns.
	MinTime int64       `json:"min_time_unix_nano"`
	MaxTime int64       `json:"max_time_unix_nano"`
	Spans   int         `json:"spans"`
	Traces  int         `json:"traces"`
	Level   int         `json:"compaction_level"`
	Sources []ulid.ULID `json:"sources,omitempty"`
	Files   []BlockFile `json:"files"`
}

// BlockFile lists a file and its size (the Parquet reader needs the size).
type BlockFile struct {
	Name string `json:"name"`
	Size int64  `json:"size_bytes"`
}

func (m *BlockMeta) fileSize(name string) int64 {
	for _, f := range m.Files {
		if f.Name == name {
			return f.Size
		}
	}
	return -1
}

// rowGroupInfo locates one Parquet row group: the trace-ID range it holds and
// the byte range of all its column chunks, so a trace-by-ID lookup fetches
// exactly one range from object storage.
type rowGroupInfo struct {
	MinTraceID string `json:"min_trace_id"`
	MaxTraceID string `json:"max_trace_id"`
	Rows       int64  `json:"rows"`
	Offset     int64  `json:"offset"`
	Length     int64  `json:"length"`
}

// blockIndex is a block's index.json.
type blockIndex struct {
	MinTime    int64                  `json:"min_time_unix_nano"`
	MaxTime    int64                  `json:"max_time_unix_nano"`
	Services   []string               `json:"services"`
	Operations map[string][]Operation `json:"operations"`
	// Attributes maps every span/resource attribute key to its values when it
	// has at most maxIndexedValues short values; keys listed in
	// HighCardinality have more values and carry only the first ones seen.
	Attributes      map[string][]string `json:"attributes"`
	HighCardinality []string            `json:"high_cardinality_keys,omitempty"`
	RowGroups       []rowGroupInfo      `json:"row_groups"`
	// FooterOffset is where the Parquet footer (metadata + length + magic)
	// starts, so opening the file costs one small range read.
	FooterOffset int64 `json:"footer_offset"`
}

// mayMatch uses the index to skip blocks that cannot contain a match.
func (ix *blockIndex) mayMatch(m *spanMatcher) bool {
	req := m.req
	if req.Service != "" {
		ops, ok := ix.Operations[req.Service]
		if !ok {
			return false
		}
		if req.Operation != "" || m.kind >= 0 {
			found := false
			for _, op := range ops {
				if (req.Operation == "" || op.Name == req.Operation) && (m.kind < 0 || spanKindFromString(op.SpanKind) == m.kind) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	for k, v := range req.Attributes {
		if isFieldAttr(k) {
			continue // decided per span from the status and kind columns
		}
		vals, ok := ix.Attributes[k]
		if !ok {
			return false
		}
		if v == "" || ix.isHighCardinality(k) {
			continue
		}
		i := sort.SearchStrings(vals, v)
		if i >= len(vals) || vals[i] != v {
			return false
		}
	}
	return true
}

func (ix *blockIndex) isHighCardinality(k string) bool {
	for _, h := range ix.HighCardinality {
		if h == k {
			return true
		}
	}
	return false
}

// summaryRow is a row of summaries.parquet, one per trace, sorted by trace ID.
type summaryRow struct {
	TraceID       [16]byte `parquet:"trace_id,zstd"`
	RootService   string   `parquet:"root_service,dict,zstd"`
	RootOperation string   `parquet:"root_operation,dict,zstd"`
	StartUnixNano int64    `parquet:"start,delta,zstd"`
	DurationNano  int64    `parquet:"duration,delta,zstd"`
	SpanCount     int32    `parquet:"span_count,zstd"`
	ErrorCount    int32    `parquet:"error_count,zstd"`
	Services      []string `parquet:"services,dict,zstd"`
}

func (s summaryRow) summary() TraceSummary {
	return TraceSummary{
		TraceID: s.TraceID, RootService: s.RootService, RootOperation: s.RootOperation,
		Start: time.Unix(0, s.StartUnixNano).UTC(), Duration: time.Duration(s.DurationNano),
		SpanCount: int(s.SpanCount), ErrorCount: int(s.ErrorCount), Services: s.Services,
	}
}

// builtBlock is a block serialised in memory, ready to upload.
type builtBlock struct {
	meta  BlockMeta
	files map[string][]byte
}

// buildBlock serialises rows into a block. rows must be sorted by sortRows and
// deduplicated.
func buildBlock(id ulid.ULID, tenant string, rows []spanRow, rowGroupSpans int, level int, sources []ulid.ULID) (*builtBlock, error) {
	bb := newBlockBuilder(id, tenant, rowGroupSpans, level, sources)
	for start := 0; start < len(rows); {
		end := start + 1
		for end < len(rows) && rows[end].TraceID == rows[start].TraceID {
			end++
		}
		if err := bb.addTrace(rows[start:end]); err != nil {
			return nil, err
		}
		start = end
	}
	return bb.finish()
}

// blockBuilder writes a block from traces added in trace-ID order, holding
// only the current row group's spans plus per-trace metadata, so the
// compactor can stream merges of blocks larger than memory would allow.
// rowGroupSpans is the target number of spans per row group; a row group
// never splits a trace, so a lookup reads a single group.
type blockBuilder struct {
	rowGroupSpans int
	data          bytes.Buffer
	w             *parquet.GenericWriter[spanRow]
	pending       []spanRow     // spans of the row group being filled
	groupIDs      [][2][16]byte // first and last trace ID of each written row group
	traceIDs      []TraceID     // for the bloom filter, sized at the end
	attrs         *attrIndex
	seenRes       map[string]struct{}
	ops           map[string]map[Operation]struct{}
	deps          map[depKey]*DependencyLink
	sums          []summaryRow
	post          postings
	meta          BlockMeta
	last          TraceID
}

func newBlockBuilder(id ulid.ULID, tenant string, rowGroupSpans int, level int, sources []ulid.ULID) *blockBuilder {
	if rowGroupSpans <= 0 {
		rowGroupSpans = 4096
	}
	bb := &blockBuilder{
		rowGroupSpans: rowGroupSpans,
		attrs:         newAttrIndex(),
		seenRes:       map[string]struct{}{},
		ops:           map[string]map[Operation]struct{}{},
		deps:          map[depKey]*DependencyLink{},
		post:          postings{},
		meta:          BlockMeta{Version: blockFormatVersion, ULID: id, Tenant: tenant, Level: level, Sources: sources},
	}
	bb.w = parquet.NewGenericWriter[spanRow](&bb.data,
		parquet.PageBufferSize(256<<10),
		parquet.DataPageStatistics(false),
		parquet.KeyValueMetadata("vigil.block_format", fmt.Sprint(blockFormatVersion)),
	)
	return bb
}

// addTrace adds the sorted, deduplicated spans of one trace. Traces must
// arrive in increasing trace-ID order.
func (bb *blockBuilder) addTrace(tr []spanRow) error {
	if len(tr) == 0 {
		return nil
	}
	id := TraceID(tr[0].TraceID)
	if bb.meta.Traces > 0 && compareBytes(id[:], bb.last[:]) <= 0 {
		return fmt.Errorf("build block: trace %s added after %s", id, bb.last)
	}
	bb.last = id
	s := summarize(tr)
	bb.sums = append(bb.sums, summaryRow{
		TraceID: s.TraceID, RootService: s.RootService, RootOperation: s.RootOperation,
		StartUnixNano: s.Start.UnixNano(), DurationNano: int64(s.Duration),
		SpanCount: int32(s.SpanCount), ErrorCount: int32(s.ErrorCount), Services: s.Services,
	})
	bb.traceIDs = append(bb.traceIDs, id)
	addDependencies(tr, bb.deps)
	ord := uint32(len(bb.sums) - 1)
	for i := range tr {
		r := &tr[i]
		bb.post.add(opKey{r.Service, r.Name, r.Kind}, ord)
		if bb.meta.MinTime == 0 || r.StartUnixNano < bb.meta.MinTime {
			bb.meta.MinTime = r.StartUnixNano
		}
		if e := r.endUnixNano(); e > bb.meta.MaxTime {
			bb.meta.MaxTime = e
		}
		so := bb.ops[r.Service]
		if so == nil {
			so = map[Operation]struct{}{}
			bb.ops[r.Service] = so
		}
		so[Operation{Name: r.Name, SpanKind: SpanKindString(ptrace.SpanKind(r.Kind))}] = struct{}{}
		bb.attrs.addRow(r)
		if _, ok := bb.seenRes[string(r.Resource)]; !ok {
			bb.seenRes[string(r.Resource)] = struct{}{}
			bb.attrs.addBlob(r.Resource)
		}
	}
	bb.meta.Traces++
	bb.meta.Spans += len(tr)
	bb.pending = append(bb.pending, tr...)
	if len(bb.pending) >= bb.rowGroupSpans {
		return bb.flushGroup()
	}
	return nil
}

func (bb *blockBuilder) flushGroup() error {
	if len(bb.pending) == 0 {
		return nil
	}
	if _, err := bb.w.Write(bb.pending); err != nil {
		return fmt.Errorf("write spans: %w", err)
	}
	if err := bb.w.Flush(); err != nil {
		return fmt.Errorf("flush row group: %w", err)
	}
	bb.groupIDs = append(bb.groupIDs, [2][16]byte{bb.pending[0].TraceID, bb.pending[len(bb.pending)-1].TraceID})
	clear(bb.pending) // drop references to the spans' blobs
	bb.pending = bb.pending[:0]
	return nil
}

// finish writes the remaining row group and serialises every block file.
func (bb *blockBuilder) finish() (*builtBlock, error) {
	if bb.meta.Spans == 0 {
		return nil, errors.New("build block: no spans")
	}
	if err := bb.flushGroup(); err != nil {
		return nil, err
	}
	if err := bb.w.Close(); err != nil {
		return nil, fmt.Errorf("close data file: %w", err)
	}
	dataBytes := bb.data.Bytes()
	ix := &blockIndex{Operations: map[string][]Operation{}, Attributes: map[string][]string{}}
	if err := fillRowGroupInfo(ix, dataBytes, bb.groupIDs); err != nil {
		return nil, err
	}
	ix.MinTime, ix.MaxTime = bb.meta.MinTime, bb.meta.MaxTime
	ix.Services = sortedKeys(bb.ops)
	for svc, set := range bb.ops {
		list := make([]Operation, 0, len(set))
		for op := range set {
			list = append(list, op)
		}
		sortOperations(list)
		ix.Operations[svc] = list
	}
	for k, vals := range bb.attrs.Keys {
		ix.Attributes[k] = sortedKeys(vals)
		if bb.attrs.Overflow[k] {
			ix.HighCardinality = append(ix.HighCardinality, k)
		}
	}
	sort.Strings(ix.HighCardinality)
	bloom := newBloom(len(bb.traceIDs), bloomFalsePositive)
	for _, id := range bb.traceIDs {
		bloom.add(id)
	}

	var sumBuf bytes.Buffer
	if err := parquet.Write(&sumBuf, bb.sums); err != nil {
		return nil, fmt.Errorf("write summaries: %w", err)
	}
	ixJSON, err := json.Marshal(ix)
	if err != nil {
		return nil, fmt.Errorf("encode block index: %w", err)
	}
	depsJSON, err := json.Marshal(sortedLinks(bb.deps))
	if err != nil {
		return nil, fmt.Errorf("encode dependencies: %w", err)
	}
	b := &builtBlock{files: map[string][]byte{
		blockDataFile:      dataBytes,
		blockBloomFile:     bloom.marshal(),
		blockIndexFile:     ixJSON,
		blockSummariesFile: sumBuf.Bytes(),
		blockDepsFile:      depsJSON,
		blockPostingsFile:  bb.post.marshal(),
	}}
	meta := bb.meta
	for _, name := range []string{blockDataFile, blockBloomFile, blockIndexFile, blockSummariesFile, blockDepsFile, blockPostingsFile} {
		meta.Files = append(meta.Files, BlockFile{Name: name, Size: int64(len(b.files[name]))})
	}
	b.meta = meta
	return b, nil
}

// fillRowGroupInfo reads back the Parquet footer of the written data file to
// record each row group's byte range and trace-ID range in the index.
func fillRowGroupInfo(ix *blockIndex, data []byte, groups [][2][16]byte) error {
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return fmt.Errorf("reopen data file: %w", err)
	}
	md := f.Metadata()
	if len(md.RowGroups) != len(groups) {
		return fmt.Errorf("data file has %d row groups, wrote %d", len(md.RowGroups), len(groups))
	}
	for i, rg := range md.RowGroups {
		lo, hi := int64(-1), int64(0)
		for _, c := range rg.Columns {
			start := c.MetaData.DataPageOffset
			if c.MetaData.DictionaryPageOffset > 0 && c.MetaData.DictionaryPageOffset < start {
				start = c.MetaData.DictionaryPageOffset
			}
			if lo < 0 || start < lo {
				lo = start
			}
			if e := start + c.MetaData.TotalCompressedSize; e > hi {
				hi = e
			}
		}
		g := groups[i]
		ix.RowGroups = append(ix.RowGroups, rowGroupInfo{
			MinTraceID: hex.EncodeToString(g[0][:]),
			MaxTraceID: hex.EncodeToString(g[1][:]),
			Rows:       rg.NumRows, Offset: lo, Length: hi - lo,
		})
	}
	// The footer starts after the last column chunk.
	var last int64
	for _, g := range ix.RowGroups {
		if e := g.Offset + g.Length; e > last {
			last = e
		}
	}
	ix.FooterOffset = last
	return nil
}

// uploadBlock writes a block: data files first, meta.json last so readers
// never see a partial block.
func uploadBlock(ctx context.Context, bkt objstore.Bucket, b *builtBlock) error {
	dir := path.Join(tracesDir, b.meta.ULID.String())
	for _, f := range b.meta.Files {
		if err := bkt.Upload(ctx, path.Join(dir, f.Name), bytes.NewReader(b.files[f.Name])); err != nil {
			return fmt.Errorf("upload %s of block %s: %w", f.Name, b.meta.ULID, err)
		}
	}
	mj, err := json.MarshalIndent(b.meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	if err := bkt.Upload(ctx, path.Join(dir, blockMetaFile), bytes.NewReader(mj)); err != nil {
		return fmt.Errorf("upload meta.json of block %s: %w", b.meta.ULID, err)
	}
	return nil
}

func readObject(ctx context.Context, bkt objstore.BucketReader, name string) ([]byte, error) {
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

func readRange(ctx context.Context, bkt objstore.BucketReader, name string, off, length int64) ([]byte, error) {
	rc, err := bkt.GetRange(ctx, name, off, length)
	if err != nil {
		return nil, fmt.Errorf("get range %s [%d,+%d): %w", name, off, length, err)
	}
	defer rc.Close()
	buf := make([]byte, length)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("read range %s [%d,+%d): %w", name, off, length, err)
	}
	return buf, nil
}

// traceIDRow is the projection used to locate a trace inside a row group.
type traceIDRow struct {
	TraceID [16]byte `parquet:"trace_id"`
}

// blockReaderAt is the io.ReaderAt behind an opened data file. The footer is
// held in memory; row groups are fetched with one range read each and kept in
// the querier's LRU, so a shared *parquet.File never re-parses its footer and
// hot row groups are not fetched twice.
type blockReaderAt struct {
	bkt    objstore.BucketReader
	name   string
	ix     *blockIndex
	footer []byte
	cache  *lruCache
	key    string // cache key prefix of this block
}

func (r *blockReaderAt) rowGroupKey(g int) string { return fmt.Sprintf("%s/rg/%d", r.key, g) }

// rowGroup returns the bytes of row group g, fetching them if needed.
func (r *blockReaderAt) rowGroup(ctx context.Context, g int) ([]byte, error) {
	if v, ok := r.cache.get(r.rowGroupKey(g)); ok {
		return v.([]byte), nil
	}
	info := r.ix.RowGroups[g]
	b, err := readRange(ctx, r.bkt, r.name, info.Offset, info.Length)
	if err != nil {
		return nil, err
	}
	r.cache.add(r.rowGroupKey(g), b, int64(len(b)))
	return b, nil
}

func (r *blockReaderAt) ReadAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if end <= 4 { // the leading magic is a constant
		return copy(p, "PAR1"[off:]), nil
	}
	if off >= r.ix.FooterOffset && end <= r.ix.FooterOffset+int64(len(r.footer)) {
		return copy(p, r.footer[off-r.ix.FooterOffset:]), nil
	}
	for g, info := range r.ix.RowGroups {
		if off >= info.Offset && end <= info.Offset+info.Length {
			// Callers prefetch with their context; this fallback only runs
			// if the LRU evicted the group in between.
			b, err := r.rowGroup(context.Background(), g)
			if err != nil {
				return 0, err
			}
			return copy(p, b[off-info.Offset:]), nil
		}
	}
	b, err := readRange(context.Background(), r.bkt, r.name, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}

// openDataFile opens a block's data file over a blockReaderAt.
func openDataFile(r *blockReaderAt, size int64) (*parquet.File, error) {
	f, err := parquet.OpenFile(r, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", r.name, err)
	}
	return f, nil
}

// readTraceRows returns the spans of trace id from the given row groups of
// an opened data file. The trace_id column alone is decoded to find the
// trace's rows; only those rows are materialised.
func readTraceRows(ctx context.Context, f *parquet.File, r *blockReaderAt, groups []int, id TraceID) ([]spanRow, error) {
	rgs := f.RowGroups()
	var out []spanRow
	for _, g := range groups {
		if g >= len(rgs) {
			return nil, fmt.Errorf("%s: row group %d out of range", r.name, g)
		}
		if _, err := r.rowGroup(ctx, g); err != nil {
			return nil, err
		}
		ids, err := readAllRows(parquet.NewGenericRowGroupReader[traceIDRow](rgs[g]), int(rgs[g].NumRows()))
		if err != nil {
			return nil, fmt.Errorf("read trace IDs of row group %d of %s: %w", g, r.name, err)
		}
		lo := sort.Search(len(ids), func(i int) bool { return compareBytes(ids[i].TraceID[:], id[:]) >= 0 })
		hi := lo
		for hi < len(ids) && ids[hi].TraceID == id {
			hi++
		}
		if lo == hi {
			continue
		}
		rd := parquet.NewGenericRowGroupReader[spanRow](rgs[g])
		if err := rd.SeekToRow(int64(lo)); err != nil {
			rd.Close()
			return nil, fmt.Errorf("seek row group %d of %s: %w", g, r.name, err)
		}
		rows, err := readAllRows(rd, hi-lo)
		if err != nil {
			return nil, fmt.Errorf("read row group %d of %s: %w", g, r.name, err)
		}
		for i := range rows {
			if rows[i].TraceID != id {
				return nil, fmt.Errorf("%s: row group %d: row %d has trace %x, want %s", r.name, g, lo+i, rows[i].TraceID, id)
			}
		}
		out = append(out, rows...)
	}
	return out, nil
}

func readAllRows[T any](rd *parquet.GenericReader[T], n int) ([]T, error) {
	defer rd.Close()
	rows := make([]T, n)
	read := 0
	for read < n {
		k, err := rd.Read(rows[read:])
		read += k
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if k == 0 {
			break
		}
	}
	return rows[:read], nil
}

// rowGroupsFor returns the row groups whose trace-ID range covers id.
func (ix *blockIndex) rowGroupsFor(id TraceID) []int {
	h := id.String()
	var out []int
	for i, g := range ix.RowGroups {
		if h >= g.MinTraceID && h <= g.MaxTraceID {
			out = append(out, i)
		}
	}
	return out
}
