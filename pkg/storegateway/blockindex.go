package storegateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/encoding"
	"github.com/prometheus/prometheus/tsdb/fileutil"
	"github.com/prometheus/prometheus/tsdb/index"
)

// blockIndex is a block's open index file: the TSDB's reader (postings, label calls) over
// a memory map of the file, and a full symbol table over the same bytes.
//
// The TSDB's reader keeps the offset of every 32nd symbol only, so each label value of
// each series it decodes costs a walk over up to 31 symbols and a new string, which the
// caller then copies into its labels anyway. A query over a day of 2h blocks decodes
// every selected series once per block: half a million such strings per query set of the
// query benchmark. series() resolves symbols by direct offset into the mapped file, at 4
// bytes of memory per symbol.
type blockIndex struct {
	*index.Reader
	mf *fileutil.MmapFile
	b  byteSlice
	// symbols holds the offset in b of every symbol, by symbol reference; nil for the
	// version 1 format (references there are byte offsets), whose series are read
	// through the TSDB's reader only.
	symbols    []uint32
	dec        index.Decoder
	castagnoli *crc32.Table
}

// byteSlice is a memory-mapped file as the TSDB's index decoders read it.
type byteSlice []byte

func (b byteSlice) Len() int                    { return len(b) }
func (b byteSlice) Range(start, end int) []byte { return b[start:end] }

// openBlockIndex maps the index file at path and prepares its symbol table.
func openBlockIndex(path string) (*blockIndex, error) {
	mf, err := fileutil.OpenMmapFile(path)
	if err != nil {
		return nil, fmt.Errorf("map index file: %w", err)
	}
	b := byteSlice(mf.Bytes())
	r, err := index.NewReader(b, index.DecodePostingsRaw)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("read index: %w", err), mf.Close())
	}
	bi := &blockIndex{Reader: r, mf: mf, b: b, castagnoli: crc32.MakeTable(crc32.Castagnoli)}
	bi.dec = index.Decoder{LookupSymbol: bi.lookupSymbol}
	if r.Version() != index.FormatV1 {
		if bi.symbols, err = symbolOffsets(b); err != nil {
			return nil, errors.Join(fmt.Errorf("read symbol table: %w", err), bi.Close())
		}
	}
	return bi, nil
}

// Close unmaps the file.
func (bi *blockIndex) Close() error {
	return errors.Join(bi.Reader.Close(), bi.mf.Close())
}

// fastSeries reports whether series() can decode this index's series.
func (bi *blockIndex) fastSeries() bool { return bi.symbols != nil }

// symbolOffsets returns the offset of every symbol of a version 2+ index. The TSDB's
// reader has verified the table's checksum when it opened the file.
func symbolOffsets(b byteSlice) ([]uint32, error) {
	toc, err := index.NewTOCFromByteSlice(b)
	if err != nil {
		return nil, err
	}
	if toc.Symbols > math.MaxUint32 {
		return nil, nil // not addressable by uint32: leave series to the TSDB's reader
	}
	off := int(toc.Symbols)
	d := encoding.NewDecbufAt(b, off, nil)
	tableLen := d.Len()
	count := d.Be32int()
	if d.Err() != nil {
		return nil, d.Err()
	}
	// Every symbol takes at least one byte, which bounds a corrupt count.
	offs := make([]uint32, 0, min(count, tableLen))
	base := off + 4 // after the table's length field
	for d.Err() == nil && len(offs) < count {
		pos := base + tableLen - d.Len()
		if pos > math.MaxUint32 {
			return nil, nil
		}
		offs = append(offs, uint32(pos))
		d.UvarintBytes()
	}
	if d.Err() != nil {
		return nil, d.Err()
	}
	return offs, nil
}

// lookupSymbol returns symbol o as a string that points into the mapped file.
func (bi *blockIndex) lookupSymbol(_ context.Context, o uint32) (string, error) {
	if int(o) >= len(bi.symbols) {
		return "", fmt.Errorf("unknown symbol offset %d", o)
	}
	p := int(bi.symbols[o])
	l, n := binary.Uvarint(bi.b[p:])
	if n <= 0 || uint64(len(bi.b)-p-n) < l {
		return "", fmt.Errorf("symbol %d: %w", o, encoding.ErrInvalidSize)
	}
	s := bi.b[p+n : p+n+int(l)]
	return unsafe.String(unsafe.SliceData(s), len(s)), nil
}

// series decodes series ref into builder and its chunk metas into chks, checking the
// entry's checksum as the TSDB's reader does. The label strings point into the mapped
// file: they are valid while the index is open, so callers copy what they keep. Only
// for indexes where fastSeries() is true.
func (bi *blockIndex) series(ref storage.SeriesRef, builder *labels.ScratchBuilder, chks *[]chunks.Meta) error {
	// Version 2+ series are 16-byte aligned and referenced by offset/16.
	off := uint64(ref) * 16
	if off > math.MaxInt || int(off) >= len(bi.b) {
		return fmt.Errorf("series %d: %w", ref, encoding.ErrInvalidSize)
	}
	d := encoding.NewDecbufUvarintAt(bi.b, int(off), bi.castagnoli)
	if d.Err() != nil {
		return fmt.Errorf("series %d: %w", ref, d.Err())
	}
	if err := bi.dec.Series(d.Get(), builder, chks); err != nil {
		return fmt.Errorf("series %d: %w", ref, err)
	}
	return nil
}
