package tracestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spanRow is one span in the flat form used both by the in-memory head and as
// the Parquet row of a trace block. Dedicated columns carry what queries filter
// on; attributes, events, links, resource and scope live in compact binary
// blobs (see encodeMap) because they are only decoded for matching spans and
// zstd compresses the repeated keys well.
type spanRow struct {
	TraceID       [16]byte `parquet:"trace_id,dict,zstd"`
	SpanID        [8]byte  `parquet:"span_id,zstd"`
	ParentSpanID  [8]byte  `parquet:"parent_span_id,zstd"`
	Name          string   `parquet:"name,dict,zstd"`
	Kind          int32    `parquet:"kind,dict,zstd"`
	StartUnixNano int64    `parquet:"start,delta,zstd"`
	DurationNano  int64    `parquet:"duration,delta,zstd"`
	StatusCode    int32    `parquet:"status_code,dict,zstd"`
	StatusMessage string   `parquet:"status_message,dict,zstd"`
	Service       string   `parquet:"service,dict,zstd"`
	TraceState    string   `parquet:"trace_state,dict,zstd"`
	Flags         int64    `parquet:"flags,dict,zstd"`
	// Attrs holds span attributes followed by the dropped-attributes count.
	Attrs []byte `parquet:"attrs,zstd"`
	// Events and Links are nil when the span has none.
	Events []byte `parquet:"events,zstd"`
	Links  []byte `parquet:"links,zstd"`
	// Resource and Scope repeat for every span of a batch, so dictionary
	// encoding stores each distinct blob once per column chunk.
	Resource []byte `parquet:"resource,dict,zstd"`
	Scope    []byte `parquet:"scope,dict,zstd"`
	// DroppedEventsLinks packs the dropped events (low 32 bits) and dropped
	// links (high 32 bits) counts; nearly always 0.
	DroppedEventsLinks int64 `parquet:"dropped_events_links,dict,zstd"`
}

func (r *spanRow) endUnixNano() int64 { return r.StartUnixNano + r.DurationNano }

func (r *spanRow) isRoot() bool { return r.ParentSpanID == [8]byte{} }

// size approximates the memory and encoded cost of the row; it is what the
// per-trace byte limit and the block size trigger count.
func (r *spanRow) size() int {
	return 16 + 8 + 8 + len(r.Name) + 4 + 8 + 8 + 4 + len(r.StatusMessage) + len(r.Service) + len(r.TraceState) + 8 +
		len(r.Attrs) + len(r.Events) + len(r.Links) + len(r.Resource) + len(r.Scope) + 8
}

// tracesToRows flattens OTLP traces into rows. Resource and scope blobs are
// encoded once per ResourceSpans/ScopeSpans and shared by their spans.
func tracesToRows(td ptrace.Traces) []spanRow {
	rows := make([]spanRow, 0, td.SpanCount())
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		res := encodeResource(rs.Resource(), rs.SchemaUrl())
		service := ""
		if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
			service = v.AsString()
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			ss := sss.At(j)
			scope := encodeScope(ss.Scope(), ss.SchemaUrl())
			spans := ss.Spans()
			for k := 0; k < spans.Len(); k++ {
				rows = append(rows, spanToRow(spans.At(k), service, res, scope))
			}
		}
	}
	return rows
}

func spanToRow(s ptrace.Span, service string, res, scope []byte) spanRow {
	start := int64(s.StartTimestamp())
	dur := int64(s.EndTimestamp()) - start
	if dur < 0 {
		dur = 0
	}
	r := spanRow{
		TraceID:            s.TraceID(),
		SpanID:             s.SpanID(),
		ParentSpanID:       s.ParentSpanID(),
		Name:               s.Name(),
		Kind:               int32(s.Kind()),
		StartUnixNano:      start,
		DurationNano:       dur,
		StatusCode:         int32(s.Status().Code()),
		StatusMessage:      s.Status().Message(),
		Service:            service,
		TraceState:         s.TraceState().AsRaw(),
		Flags:              int64(s.Flags()),
		Resource:           res,
		Scope:              scope,
		DroppedEventsLinks: int64(s.DroppedEventsCount()) | int64(s.DroppedLinksCount())<<32,
	}
	var e encoder
	e.putMap(s.Attributes())
	e.uvarint(uint64(s.DroppedAttributesCount()))
	r.Attrs = e.buf
	if s.Events().Len() > 0 {
		var ee encoder
		evs := s.Events()
		ee.uvarint(uint64(evs.Len()))
		for i := 0; i < evs.Len(); i++ {
			ev := evs.At(i)
			ee.varint(int64(ev.Timestamp()) - start)
			ee.str(ev.Name())
			ee.putMap(ev.Attributes())
			ee.uvarint(uint64(ev.DroppedAttributesCount()))
		}
		r.Events = ee.buf
	}
	if s.Links().Len() > 0 {
		var le encoder
		ls := s.Links()
		le.uvarint(uint64(ls.Len()))
		for i := 0; i < ls.Len(); i++ {
			l := ls.At(i)
			tid, sid := l.TraceID(), l.SpanID()
			le.buf = append(le.buf, tid[:]...)
			le.buf = append(le.buf, sid[:]...)
			le.str(l.TraceState().AsRaw())
			le.putMap(l.Attributes())
			le.uvarint(uint64(l.DroppedAttributesCount()))
			le.uvarint(uint64(l.Flags()))
		}
		r.Links = le.buf
	}
	return r
}

func encodeResource(r pcommon.Resource, schemaURL string) []byte {
	var e encoder
	e.putMap(r.Attributes())
	e.uvarint(uint64(r.DroppedAttributesCount()))
	e.str(schemaURL)
	return e.buf
}

func encodeScope(s pcommon.InstrumentationScope, schemaURL string) []byte {
	var e encoder
	e.str(s.Name())
	e.str(s.Version())
	e.putMap(s.Attributes())
	e.uvarint(uint64(s.DroppedAttributesCount()))
	e.str(schemaURL)
	return e.buf
}

// rowsToTraces rebuilds OTLP traces from rows, grouping spans that share a
// resource and scope blob. Output order follows the input order of first
// appearance, so sorted input gives deterministic output.
func rowsToTraces(rows []spanRow) (ptrace.Traces, error) {
	td := ptrace.NewTraces()
	resIdx := map[string]int{}
	type scopeKey struct{ res, scope string }
	scopeIdx := map[scopeKey]int{}
	for i := range rows {
		r := &rows[i]
		ri, ok := resIdx[string(r.Resource)]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			d := decoder{buf: r.Resource}
			d.getMap(rs.Resource().Attributes())
			rs.Resource().SetDroppedAttributesCount(uint32(d.uvarint()))
			rs.SetSchemaUrl(d.str())
			if d.err != nil {
				return td, fmt.Errorf("decode resource of span %x: %w", r.SpanID, d.err)
			}
			ri = td.ResourceSpans().Len() - 1
			resIdx[string(r.Resource)] = ri
		}
		rs := td.ResourceSpans().At(ri)
		sk := scopeKey{string(r.Resource), string(r.Scope)}
		si, ok := scopeIdx[sk]
		if !ok {
			ss := rs.ScopeSpans().AppendEmpty()
			d := decoder{buf: r.Scope}
			ss.Scope().SetName(d.str())
			ss.Scope().SetVersion(d.str())
			d.getMap(ss.Scope().Attributes())
			ss.Scope().SetDroppedAttributesCount(uint32(d.uvarint()))
			ss.SetSchemaUrl(d.str())
			if d.err != nil {
				return td, fmt.Errorf("decode scope of span %x: %w", r.SpanID, d.err)
			}
			si = rs.ScopeSpans().Len() - 1
			scopeIdx[sk] = si
		}
		s := rs.ScopeSpans().At(si).Spans().AppendEmpty()
		if err := rowToSpan(r, s); err != nil {
			return td, err
		}
	}
	return td, nil
}

func rowToSpan(r *spanRow, s ptrace.Span) error {
	s.SetTraceID(r.TraceID)
	s.SetSpanID(r.SpanID)
	s.SetParentSpanID(r.ParentSpanID)
	s.SetName(r.Name)
	s.SetKind(ptrace.SpanKind(r.Kind))
	s.SetStartTimestamp(pcommon.Timestamp(r.StartUnixNano))
	s.SetEndTimestamp(pcommon.Timestamp(r.endUnixNano()))
	s.Status().SetCode(ptrace.StatusCode(r.StatusCode))
	s.Status().SetMessage(r.StatusMessage)
	s.TraceState().FromRaw(r.TraceState)
	s.SetFlags(uint32(r.Flags))
	s.SetDroppedEventsCount(uint32(r.DroppedEventsLinks))
	s.SetDroppedLinksCount(uint32(r.DroppedEventsLinks >> 32))
	d := decoder{buf: r.Attrs}
	d.getMap(s.Attributes())
	s.SetDroppedAttributesCount(uint32(d.uvarint()))
	if d.err != nil {
		return fmt.Errorf("decode attributes of span %x: %w", r.SpanID, d.err)
	}
	if len(r.Events) > 0 {
		d := decoder{buf: r.Events}
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			ev := s.Events().AppendEmpty()
			ev.SetTimestamp(pcommon.Timestamp(r.StartUnixNano + d.varint()))
			ev.SetName(d.str())
			d.getMap(ev.Attributes())
			ev.SetDroppedAttributesCount(uint32(d.uvarint()))
		}
		if d.err != nil {
			return fmt.Errorf("decode events of span %x: %w", r.SpanID, d.err)
		}
	}
	if len(r.Links) > 0 {
		d := decoder{buf: r.Links}
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			l := s.Links().AppendEmpty()
			var tid [16]byte
			var sid [8]byte
			d.bytesInto(tid[:])
			d.bytesInto(sid[:])
			l.SetTraceID(tid)
			l.SetSpanID(sid)
			l.TraceState().FromRaw(d.str())
			d.getMap(l.Attributes())
			l.SetDroppedAttributesCount(uint32(d.uvarint()))
			l.SetFlags(uint32(d.uvarint()))
		}
		if d.err != nil {
			return fmt.Errorf("decode links of span %x: %w", r.SpanID, d.err)
		}
	}
	return nil
}

// sortRows orders rows by trace ID, then start time, then span ID: the block
// order, which also makes query output deterministic.
func sortRows(rows []spanRow) {
	sort.Slice(rows, func(i, j int) bool { return rowLess(&rows[i], &rows[j]) })
}

func rowLess(a, b *spanRow) bool {
	if c := compareBytes(a.TraceID[:], b.TraceID[:]); c != 0 {
		return c < 0
	}
	if a.StartUnixNano != b.StartUnixNano {
		return a.StartUnixNano < b.StartUnixNano
	}
	return compareBytes(a.SpanID[:], b.SpanID[:]) < 0
}

func compareBytes(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return len(a) - len(b)
}

// dedupSorted removes rows with the same trace and span ID (replicas written
// by several ingesters, or client retries) from rows sorted by sortRows. Rows
// of one span carry the same start time, so duplicates are adjacent unless a
// retry changed the span; the map catches that case too.
func dedupSorted(rows []spanRow) []spanRow {
	if len(rows) < 2 {
		return rows
	}
	out := rows[:0]
	type key struct {
		t [16]byte
		s [8]byte
	}
	var seen map[key]struct{}
	var cur [16]byte
	for i := range rows {
		if i == 0 || rows[i].TraceID != cur {
			cur = rows[i].TraceID
			seen = map[key]struct{}{}
		}
		k := key{rows[i].TraceID, rows[i].SpanID}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, rows[i])
	}
	return out
}

// Value type tags of the attribute encoding.
const (
	tagEmpty byte = iota
	tagStr
	tagInt
	tagDouble
	tagBool
	tagBytes
	tagSlice
	tagMap
)

// maxNesting bounds recursion when decoding untrusted blobs.
const maxNesting = 32

// encoder writes the compact attribute encoding:
//
//	map   = uvarint(n) n*(str key, value)
//	value = tag byte, then str | zigzag varint | 8-byte LE float | 1 byte bool | str | uvarint(n) n*value | map
//	str   = uvarint(len) bytes
type encoder struct{ buf []byte }

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }

func (e *encoder) putMap(m pcommon.Map) {
	e.uvarint(uint64(m.Len()))
	m.Range(func(k string, v pcommon.Value) bool {
		e.str(k)
		e.putValue(v)
		return true
	})
}

func (e *encoder) putValue(v pcommon.Value) {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		e.buf = append(e.buf, tagStr)
		e.str(v.Str())
	case pcommon.ValueTypeInt:
		e.buf = append(e.buf, tagInt)
		e.varint(v.Int())
	case pcommon.ValueTypeDouble:
		e.buf = append(e.buf, tagDouble)
		e.buf = binary.LittleEndian.AppendUint64(e.buf, math.Float64bits(v.Double()))
	case pcommon.ValueTypeBool:
		b := byte(0)
		if v.Bool() {
			b = 1
		}
		e.buf = append(e.buf, tagBool, b)
	case pcommon.ValueTypeBytes:
		e.buf = append(e.buf, tagBytes)
		e.uvarint(uint64(v.Bytes().Len()))
		e.buf = append(e.buf, v.Bytes().AsRaw()...)
	case pcommon.ValueTypeSlice:
		e.buf = append(e.buf, tagSlice)
		s := v.Slice()
		e.uvarint(uint64(s.Len()))
		for i := 0; i < s.Len(); i++ {
			e.putValue(s.At(i))
		}
	case pcommon.ValueTypeMap:
		e.buf = append(e.buf, tagMap)
		e.putMap(v.Map())
	default:
		e.buf = append(e.buf, tagEmpty)
	}
}

var errCorrupt = errors.New("corrupt attribute encoding")

// decoder reads the encoding written by encoder. The first error sticks and
// every later read returns zero values, so callers check d.err once.
type decoder struct {
	buf   []byte
	err   error
	depth int
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.buf = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// count reads a length and rejects ones that cannot fit in the remaining
// input (every element takes at least one byte), so corrupt input cannot make
// us allocate huge slices.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.buf)) {
		d.fail()
		return nil
	}
	b := d.buf[:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) str() string { return string(d.raw()) }

func (d *decoder) bytesInto(dst []byte) {
	if d.err != nil || len(d.buf) < len(dst) {
		d.fail()
		return
	}
	copy(dst, d.buf)
	d.buf = d.buf[len(dst):]
}

func (d *decoder) getMap(m pcommon.Map) {
	n := d.count()
	m.EnsureCapacity(n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str()
		d.getValue(m.PutEmpty(k))
	}
}

func (d *decoder) getValue(v pcommon.Value) {
	if d.err != nil {
		return
	}
	if len(d.buf) == 0 {
		d.fail()
		return
	}
	tag := d.buf[0]
	d.buf = d.buf[1:]
	switch tag {
	case tagEmpty:
	case tagStr:
		v.SetStr(d.str())
	case tagInt:
		v.SetInt(d.varint())
	case tagDouble:
		var b [8]byte
		d.bytesInto(b[:])
		v.SetDouble(math.Float64frombits(binary.LittleEndian.Uint64(b[:])))
	case tagBool:
		var b [1]byte
		d.bytesInto(b[:])
		v.SetBool(b[0] == 1)
	case tagBytes:
		v.SetEmptyBytes().FromRaw(d.raw())
	case tagSlice, tagMap:
		d.depth++
		if d.depth > maxNesting {
			d.fail()
			return
		}
		if tag == tagSlice {
			s := v.SetEmptySlice()
			n := d.count()
			s.EnsureCapacity(n)
			for i := 0; i < n && d.err == nil; i++ {
				d.getValue(s.AppendEmpty())
			}
		} else {
			d.getMap(v.SetEmptyMap())
		}
		d.depth--
	default:
		d.fail()
	}
}

// skipValue advances past one encoded value.
func (d *decoder) skipValue() {
	if d.err != nil {
		return
	}
	if len(d.buf) == 0 {
		d.fail()
		return
	}
	tag := d.buf[0]
	d.buf = d.buf[1:]
	switch tag {
	case tagEmpty:
	case tagStr, tagBytes:
		d.raw()
	case tagInt:
		d.varint()
	case tagDouble:
		var b [8]byte
		d.bytesInto(b[:])
	case tagBool:
		var b [1]byte
		d.bytesInto(b[:])
	case tagSlice, tagMap:
		d.depth++
		if d.depth > maxNesting {
			d.fail()
			return
		}
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			if tag == tagMap {
				d.raw()
			}
			d.skipValue()
		}
		d.depth--
	default:
		d.fail()
	}
}

// valueString renders one encoded value the way pcommon.Value.AsString does,
// without allocating for strings, ints and bools of unwanted keys.
func (d *decoder) valueString() string {
	if d.err != nil || len(d.buf) == 0 {
		d.fail()
		return ""
	}
	switch d.buf[0] {
	case tagStr:
		d.buf = d.buf[1:]
		return string(d.raw())
	case tagInt:
		d.buf = d.buf[1:]
		return strconv.FormatInt(d.varint(), 10)
	case tagBool:
		d.buf = d.buf[1:]
		var b [1]byte
		d.bytesInto(b[:])
		return strconv.FormatBool(b[0] == 1)
	}
	v := pcommon.NewValueEmpty()
	d.getValue(v)
	return v.AsString()
}

// matchAttrBlob walks an encoded attribute map and marks wanted keys whose
// value matches (empty wanted value = key present). Unwanted values are
// skipped without decoding.
func matchAttrBlob(blob []byte, want map[string]string, found map[string]bool) {
	if len(blob) == 0 {
		return
	}
	d := decoder{buf: blob}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		k := d.raw()
		w, ok := want[string(k)]
		if !ok || found[string(k)] {
			d.skipValue()
			continue
		}
		if w == "" {
			found[string(k)] = true
			d.skipValue()
			continue
		}
		if d.valueString() == w {
			found[string(k)] = true
		}
	}
}
