package storegateway

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"slices"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tombstones"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"
)

// chunkReadAhead is how many bytes one chunk fetch reads. Typical XOR chunks (120 samples)
// are a few hundred bytes, so one request covers the chunk (bigger ones take a second,
// exact request) and the neighbouring chunks a series scan needs next, which are cached.
const chunkReadAhead = 32 << 10

// remoteBlock serves one bucket block: the index from a local copy of its index file, chunks
// fetched on demand from the bucket through the shared chunk cache. It implements
// tsdb.BlockReader so the TSDB's own block queriers select series.
type remoteBlock struct {
	meta *metadata.Meta
	id   string // tenant/ULID, also the bucket prefix of the block
	// cacheID identifies the block's chunks in the chunk cache: a number is cheaper to
	// hash and compare than id on every chunk lookup.
	cacheID uint64
	bkt     objstore.BucketReader
	cache   *chunkCache
	// loadIndex downloads the index file if it is not on local disk and opens it;
	// removeIndex deletes the local file.
	loadIndex   func(ctx context.Context) (*blockIndex, error)
	removeIndex func() error
	indexes     *indexLRU
	ctx         context.Context // cancelled when the store-gateway stops
	onRead      func(bytes int)
	// readAhead is how many bytes the first range read of a chunk fetches.
	readAhead int64

	// Sequential read-ahead state: the last read's segment, offset and size.
	raMtx  sync.Mutex
	raSeg  int
	raOff  int64
	raSize int64

	mtx            sync.Mutex
	closing        bool
	pendingReaders sync.WaitGroup
	index          *blockIndex // nil while evicted from local disk; guarded by mtx
	indexRefs      int         // queries using index; guarded by mtx
	indexSize      int64       // size of the index file, known once loaded; guarded by mtx
	loadMtx        sync.Mutex  // serialises (re)loading the index

	// Owned by indexes (guarded by its mutex).
	lruElem  *list.Element
	lruBytes int64
}

var _ tsdb.BlockReader = (*remoteBlock)(nil)

func (b *remoteBlock) startRead() error {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	if b.closing {
		return fmt.Errorf("block %s: %w", b.id, tsdb.ErrClosing)
	}
	b.pendingReaders.Add(1)
	return nil
}

// close waits for in-flight queries, then releases the index file.
func (b *remoteBlock) close() error {
	b.mtx.Lock()
	b.closing = true
	b.mtx.Unlock()
	b.pendingReaders.Wait()
	b.indexes.remove(b)
	b.mtx.Lock()
	ir := b.index
	b.index = nil
	b.mtx.Unlock()
	if ir != nil {
		if err := ir.Close(); err != nil {
			return fmt.Errorf("close index of block %s: %w", b.id, err)
		}
	}
	return nil
}

// Index implements tsdb.BlockReader. It downloads the index again if it was evicted.
func (b *remoteBlock) Index() (tsdb.IndexReader, error) {
	if err := b.startRead(); err != nil {
		return nil, err
	}
	ir, err := b.acquireIndex()
	if err != nil {
		b.pendingReaders.Done()
		return nil, err
	}
	return blockIndexReader{IndexReader: ir, ix: ir, b: b}, nil
}

// acquireIndex returns the open index with a reference held; releaseIndex drops it.
func (b *remoteBlock) acquireIndex() (*blockIndex, error) {
	if ir := b.refIndex(); ir != nil {
		b.indexes.touch(b)
		return ir, nil
	}
	b.loadMtx.Lock()
	defer b.loadMtx.Unlock()
	if ir := b.refIndex(); ir != nil { // loaded while we waited
		b.indexes.touch(b)
		return ir, nil
	}
	ir, err := b.loadIndex(b.ctx)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", b.id, err)
	}
	b.mtx.Lock()
	b.index, b.indexSize = ir, ir.Size()
	b.indexRefs++
	b.mtx.Unlock()
	b.indexes.add(b, ir.Size())
	return ir, nil
}

func (b *remoteBlock) refIndex() *blockIndex {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	if b.index != nil {
		b.indexRefs++
	}
	return b.index
}

func (b *remoteBlock) releaseIndex() {
	b.mtx.Lock()
	b.indexRefs--
	b.mtx.Unlock()
	b.indexes.evict(nil) // an index that was in use may now be evictable
}

// evictIndex closes and deletes the local index unless a query uses it.
func (b *remoteBlock) evictIndex() bool {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	if b.index == nil || b.indexRefs > 0 {
		return false
	}
	_ = b.index.Close()
	b.index = nil
	_ = b.removeIndex() // a leftover file is reused by the next load
	return true
}

// Chunks implements tsdb.BlockReader.
func (b *remoteBlock) Chunks() (tsdb.ChunkReader, error) {
	if err := b.startRead(); err != nil {
		return nil, err
	}
	return blockChunkReader{b: b}, nil
}

// Tombstones implements tsdb.BlockReader. Bucket blocks carry no tombstones: deletions are
// applied by the compactor.
func (b *remoteBlock) Tombstones() (tombstones.Reader, error) {
	return tombstones.NewMemTombstones(), nil
}

// Meta implements tsdb.BlockReader.
func (b *remoteBlock) Meta() tsdb.BlockMeta { return b.meta.BlockMeta }

// Size implements tsdb.BlockReader: what the block holds locally.
func (b *remoteBlock) Size() int64 {
	b.mtx.Lock()
	defer b.mtx.Unlock()
	return b.indexSize
}

type blockIndexReader struct {
	tsdb.IndexReader
	ix *blockIndex // the same index, for series()
	b  *remoteBlock
}

// LabelNames adds matcher support, which the raw index reader lacks (the TSDB's own block
// wrapper does the same).
func (r blockIndexReader) LabelNames(ctx context.Context, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.IndexReader.LabelNames(ctx)
	}
	p, err := tsdb.PostingsForMatchers(ctx, r.IndexReader, matchers...)
	if err != nil {
		return nil, fmt.Errorf("block %s: postings: %w", r.b.id, err)
	}
	names, err := r.IndexReader.LabelNamesFor(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("block %s: label names: %w", r.b.id, err)
	}
	return names, nil
}

// LabelValues adds matcher support: values of name among the series the matchers select.
func (r blockIndexReader) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.IndexReader.LabelValues(ctx, name, hints)
	}
	p, err := tsdb.PostingsForMatchers(ctx, r.IndexReader, matchers...)
	if err != nil {
		return nil, fmt.Errorf("block %s: postings: %w", r.b.id, err)
	}
	seen := map[string]struct{}{}
	var (
		out []string
		b   labels.ScratchBuilder
	)
	for p.Next() {
		if err := r.IndexReader.Series(p.At(), &b, nil); err != nil {
			return nil, fmt.Errorf("block %s: series: %w", r.b.id, err)
		}
		v := b.Labels().Get(name)
		if v == "" {
			continue
		}
		if _, ok := seen[v]; !ok {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("block %s: postings: %w", r.b.id, err)
	}
	slices.Sort(out)
	if hints != nil && hints.Limit > 0 && len(out) > hints.Limit {
		out = out[:hints.Limit]
	}
	return out, nil
}

// SortedLabelValues implements tsdb.IndexReader with matcher support.
func (r blockIndexReader) SortedLabelValues(ctx context.Context, name string, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.IndexReader.SortedLabelValues(ctx, name, hints)
	}
	return r.LabelValues(ctx, name, hints, matchers...)
}

// Close releases the read reference; the index itself stays open for other queries until
// the index LRU evicts it.
func (r blockIndexReader) Close() error {
	r.b.releaseIndex()
	r.b.pendingReaders.Done()
	return nil
}

type blockChunkReader struct{ b *remoteBlock }

func (r blockChunkReader) Close() error {
	r.b.pendingReaders.Done()
	return nil
}

// ChunkOrIterable implements tsdb.ChunkReader. Chunk refs of persisted blocks are
// segment<<32 | offset, the segment being the 0-based index of chunks/00000N.
func (r blockChunkReader) ChunkOrIterable(meta chunks.Meta) (chunkenc.Chunk, chunkenc.Iterable, error) {
	chk, err := r.b.chunk(meta.Ref)
	return chk, nil, err
}

// chunk returns a chunk from the cache, or from the bucket (then caching it). The caller
// must hold a read reference (Chunks).
func (b *remoteBlock) chunk(ref chunks.ChunkRef) (chunkenc.Chunk, error) {
	chk, ok, err := b.cache.getChunk(chunkKey{block: b.cacheID, ref: uint64(ref)})
	if err != nil {
		return nil, fmt.Errorf("block %s: decode chunk %d: %w", b.id, ref, err)
	}
	if ok {
		return chk, nil
	}
	raw, err := b.fetchChunk(uint64(ref))
	if err != nil {
		return nil, err
	}
	chk, err = chunkenc.FromData(chunkenc.Encoding(raw[0]), raw[1:])
	if err != nil {
		return nil, fmt.Errorf("block %s: decode chunk %d: %w", b.id, ref, err)
	}
	return chk, nil
}

// fetchChunk reads a chunk (the encoding byte followed by the chunk data) from the bucket
// and caches it with the complete chunks that follow it in the same read.
func (b *remoteBlock) fetchChunk(ref uint64) ([]byte, error) {
	key := chunkKey{block: b.cacheID, ref: ref}
	seq, off := int(ref>>32), int64(uint32(ref))
	name := path.Join(b.id, "chunks", fmt.Sprintf("%06d", seq+1))

	bufp := b.readBuffer(b.readSize(seq, off))
	defer readBufPool.Put(bufp)
	buf, err := b.getRange(name, off, *bufp)
	if err != nil {
		return nil, err
	}
	dataLen, n := binary.Uvarint(buf)
	if n <= 0 {
		return nil, fmt.Errorf("block %s: chunk %d in %s: bad length header", b.id, ref, name)
	}
	need := n + 1 + int(dataLen) // length varint, encoding byte, data
	if len(buf) < need {
		if buf, err = b.getRange(name, off, make([]byte, need)); err != nil {
			return nil, err
		}
		if len(buf) < need {
			return nil, fmt.Errorf("block %s: chunk %d in %s: truncated (%d of %d bytes)", b.id, ref, name, len(buf), need)
		}
	}
	// Copy so the cache does not pin the whole read-ahead buffer.
	data := make([]byte, need-n)
	copy(data, buf[n:need])
	b.cache.put(key, data)
	// Chunks of consecutive series lie next to each other in the segment file, and block
	// queriers read series in that order: cache the complete chunks that came along with
	// this read, so a scan costs one range request per read-ahead window, not per chunk.
	b.cacheFollowingChunks(uint64(seq)<<32, off, buf, need)
	return data, nil
}

// cacheFollowingChunks caches every complete, CRC-valid chunk in buf after the first
// `from` bytes. buf starts at offset off of the segment identified by segRef.
func (b *remoteBlock) cacheFollowingChunks(segRef uint64, off int64, buf []byte, from int) {
	castagnoli := crc32.MakeTable(crc32.Castagnoli) // TSDB chunk files' CRC; cached by the stdlib
	pos := from + crc32.Size                        // skip the CRC of the chunk already handled
	for pos < len(buf) {
		dataLen, n := binary.Uvarint(buf[pos:])
		if n <= 0 {
			return
		}
		end := pos + n + 1 + int(dataLen) // length, encoding, data
		if dataLen > uint64(len(buf)) || end+crc32.Size > len(buf) {
			return // incomplete: the next miss reads it
		}
		if crc32.Checksum(buf[pos+n:end], castagnoli) != binary.BigEndian.Uint32(buf[end:]) {
			return // not a chunk boundary after all (padding, end of data): stop trusting the buffer
		}
		data := make([]byte, end-pos-n)
		copy(data, buf[pos+n:end])
		b.cache.put(chunkKey{block: b.cacheID, ref: segRef | uint64(off+int64(pos))}, data)
		pos = end + crc32.Size
	}
}

// readSize returns how many bytes to read for a chunk at off in segment seq. Scans read
// chunks in file order, so a miss inside or right after the previous read of the same
// segment doubles the read size (up to maxReadAheadFactor times readAhead): a cold scan
// of a block costs a few large range requests instead of one per read-ahead window.
func (b *remoteBlock) readSize(seq int, off int64) int64 {
	b.raMtx.Lock()
	defer b.raMtx.Unlock()
	size := b.readAhead
	if b.raSize > 0 && seq == b.raSeg && off >= b.raOff && off <= b.raOff+b.raSize {
		size = min(2*b.raSize, maxReadAheadFactor*b.readAhead)
	}
	b.raSeg, b.raOff, b.raSize = seq, off, size
	return size
}

// maxReadAheadFactor bounds sequential read-ahead growth: 32 x 32 KiB = 1 MiB per request.
const maxReadAheadFactor = 32

// readBufPool holds read-ahead buffers: chunks are copied out of them before they return.
var readBufPool sync.Pool

func (b *remoteBlock) readBuffer(size int64) *[]byte {
	if p, ok := readBufPool.Get().(*[]byte); ok && int64(cap(*p)) >= size {
		*p = (*p)[:size]
		return p
	}
	buf := make([]byte, size)
	return &buf
}

// getRange reads up to len(buf) bytes at off into buf and returns what was read (less at
// the end of the object).
func (b *remoteBlock) getRange(name string, off int64, buf []byte) ([]byte, error) {
	length := int64(len(buf))
	rc, err := b.bkt.GetRange(b.ctx, name, off, length)
	if err != nil {
		return nil, fmt.Errorf("get %s [%d,+%d]: %w", name, off, length, err)
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s [%d,+%d]: %w", name, off, length, err)
	}
	if b.onRead != nil {
		b.onRead(n)
	}
	return buf[:n], nil
}
