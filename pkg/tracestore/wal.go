package tracestore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
)

// WAL record framing: 4-byte little-endian payload length, 4-byte CRC32C
// (Castagnoli) of the payload, payload. The payload is an OTLP
// ExportTraceServiceRequest in protobuf. A torn tail (partial header or
// payload, or a CRC mismatch in the last record) is expected after a crash and
// is truncated on replay; such a record was never acknowledged because
// acknowledgement waits for fsync.
const (
	walHeaderSize = 8
	// maxWALRecord bounds a single record so a corrupt length cannot make
	// replay allocate gigabytes. gRPC's default max message is 4 MiB; allow
	// headroom for raised limits.
	maxWALRecord = 256 << 20
)

// crc32c checksums with the Castagnoli polynomial (hardware-accelerated);
// MakeTable returns the standard library's shared table for it.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

var errTornRecord = errors.New("torn or corrupt WAL record")

// encodeWALRecord frames payload into a record.
func encodeWALRecord(dst, payload []byte) []byte {
	var h [walHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], crc32c(payload))
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// readWALRecord reads one record from r, where remaining bytes are left in
// the segment. errTornRecord means the segment ends mid-record, the length
// is implausible or the checksum does not match.
func readWALRecord(r io.Reader, remaining int64) ([]byte, error) {
	var hdr [walHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errTornRecord, err)
	}
	size := binary.LittleEndian.Uint32(hdr[0:4])
	if size > maxWALRecord || int64(size) > remaining-walHeaderSize {
		return nil, fmt.Errorf("%w: record length %d with %d bytes left", errTornRecord, size, remaining-walHeaderSize)
	}
	// A fresh buffer per record: decoded OTLP may alias it.
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", errTornRecord, err)
	}
	if crc32c(payload) != binary.LittleEndian.Uint32(hdr[4:8]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errTornRecord)
	}
	return payload, nil
}

// wal is a segmented write-ahead log with group commit. Segments are files
// named by a zero-padded sequence number. Appends go to the newest segment;
// cutting the head rotates to a new segment so the old ones can be deleted
// once the block made from them is in the bucket.
//
// Group commit: Append buffers its record under mu and then waits on syncMu.
// Whoever holds syncMu flushes everything buffered so far and fsyncs once, so
// concurrent pushes share one fsync instead of queueing one each.
type wal struct {
	dir string

	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	seq     int    // current segment number
	written uint64 // records appended
	err     error  // sticky: after a failed write or sync nothing is acknowledged

	syncMu sync.Mutex
	synced uint64 // records known durable; guarded by syncMu
	syncs  uint64 // fsyncs done by group commits; guarded by syncMu
}

func openWAL(dir string) (*wal, []int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create WAL dir %s: %w", dir, err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, nil, err
	}
	w := &wal{dir: dir}
	next := 1
	if len(segs) > 0 {
		next = segs[len(segs)-1] + 1
	}
	// Never append to a segment written before a crash: its tail may be torn.
	if err := w.openSegment(next); err != nil {
		return nil, nil, err
	}
	return w, segs, nil
}

func segmentName(dir string, seq int) string {
	return filepath.Join(dir, fmt.Sprintf("%08d", seq))
}

func listSegments(dir string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list WAL dir %s: %w", dir, err)
	}
	var segs []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || e.IsDir() {
			continue
		}
		segs = append(segs, n)
	}
	sort.Ints(segs)
	return segs, nil
}

func (w *wal) openSegment(seq int) error {
	f, err := os.OpenFile(segmentName(w.dir, seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open WAL segment: %w", err)
	}
	// Make the new file's directory entry durable, otherwise a crash could
	// lose the whole segment even though its contents were fsynced.
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return err
	}
	w.f, w.seq = f, seq
	if w.w == nil {
		w.w = bufio.NewWriterSize(f, 256<<10)
	} else {
		w.w.Reset(f)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// Append writes one record and returns once it is fsynced.
func (w *wal) Append(payload []byte) error {
	rec := encodeWALRecord(make([]byte, 0, walHeaderSize+len(payload)), payload)
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if _, err := w.w.Write(rec); err != nil {
		w.err = fmt.Errorf("write WAL segment %d: %w", w.seq, err)
		w.mu.Unlock()
		return w.err
	}
	w.written++
	mine := w.written
	w.mu.Unlock()
	return w.syncUpTo(mine)
}

func (w *wal) syncUpTo(rec uint64) error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	if w.synced >= rec {
		return nil // a concurrent group commit covered this record
	}
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	target := w.written
	err := w.w.Flush()
	f := w.f
	w.mu.Unlock()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("sync WAL segment: %w", err)
		}
		err = w.err
		w.mu.Unlock()
		return err
	}
	w.synced = target
	w.syncs++
	return nil
}

// Rotate closes the current segment and starts a new one. It returns the
// number of the last closed segment: every record appended before Rotate is
// in a segment <= that number. Callers prevent concurrent Appends.
func (w *wal) Rotate() (int, error) {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if err := w.w.Flush(); err != nil {
		return 0, fmt.Errorf("flush WAL segment %d: %w", w.seq, err)
	}
	if err := w.f.Sync(); err != nil {
		return 0, fmt.Errorf("sync WAL segment %d: %w", w.seq, err)
	}
	if err := w.f.Close(); err != nil {
		return 0, fmt.Errorf("close WAL segment %d: %w", w.seq, err)
	}
	w.synced = w.written
	closed := w.seq
	if err := w.openSegment(closed + 1); err != nil {
		w.err = err
		return 0, err
	}
	return closed, nil
}

// Truncate deletes segments numbered <= upTo.
func (w *wal) Truncate(upTo int) error {
	segs, err := listSegments(w.dir)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s > upTo {
			break
		}
		if err := os.Remove(segmentName(w.dir, s)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove WAL segment %d: %w", s, err)
		}
	}
	return syncDir(w.dir)
}

func (w *wal) Close() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	ferr := w.w.Flush()
	if err := w.f.Sync(); err != nil && ferr == nil {
		ferr = err
	}
	if err := w.f.Close(); err != nil && ferr == nil {
		ferr = err
	}
	w.f = nil
	if w.err == nil {
		w.err = errors.New("WAL closed")
	}
	if ferr != nil {
		return fmt.Errorf("close WAL: %w", ferr)
	}
	return nil
}

// replaySegment calls fn for every intact record of a segment, streaming so
// a large segment is never held in memory at once. It stops at the first torn
// or corrupt record and returns how many bytes from there on were ignored;
// those were never acknowledged because acknowledgement waits for fsync.
func replaySegment(path string, fn func(payload []byte) error) (dropped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open WAL segment %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat WAL segment %s: %w", path, err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	for off < fi.Size() {
		payload, err := readWALRecord(r, fi.Size()-off)
		if err != nil {
			return int(fi.Size() - off), nil
		}
		if err := fn(payload); err != nil {
			return 0, fmt.Errorf("replay WAL segment %s at offset %d: %w", path, off, err)
		}
		off += walHeaderSize + int64(len(payload))
	}
	return 0, nil
}
