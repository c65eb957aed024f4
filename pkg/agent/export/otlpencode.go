package export

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// Attr is one span attribute: a string or an integer value.
type Attr struct {
	Key   string
	Str   string
	Int   int64
	IsInt bool
}

// StrAttr is a string attribute.
func StrAttr(key, value string) Attr { return Attr{Key: key, Str: value} }

// IntAttr is an integer attribute.
func IntAttr(key string, value int64) Attr { return Attr{Key: key, Int: value, IsInt: true} }

// Field numbers of the OTLP trace protos
// (opentelemetry/proto/collector/trace/v1, trace/v1, common/v1, resource/v1).
const (
	fieldRequestResourceSpans  = 1
	fieldResourceSpansResource = 1
	fieldResourceSpansScope    = 2
	fieldResourceAttributes    = 1
	fieldScopeSpansScope       = 1
	fieldScopeSpansSpans       = 2
	fieldScopeName             = 1
	fieldSpanTraceID           = 1
	fieldSpanSpanID            = 2
	fieldSpanName              = 5
	fieldSpanKind              = 6
	fieldSpanStart             = 7
	fieldSpanEnd               = 8
	fieldSpanAttributes        = 9
	fieldSpanStatus            = 15
	fieldStatusMessage         = 2
	fieldStatusCode            = 3
	fieldKeyValueKey           = 1
	fieldKeyValueValue         = 2
	fieldAnyValueString        = 1
	fieldAnyValueInt           = 3

	wireVarint = 0
	wireI64    = 1
	wireLen    = 2

	otlpSpanKindServer  = 2
	otlpSpanKindClient  = 3
	otlpStatusCodeError = 2
)

const scopeName = "github.com/vigil-obs/vigil/pkg/agent"

// spanQueue holds spans already encoded as OTLP Span messages, grouped by
// service instance (one ResourceSpans each, in the order they first
// appeared). Spans are encoded when they are queued: building pdata at
// send time (an object per span, attribute and value, all garbage a moment
// later) cost the agent more CPU than everything else it does per request.
// Each observed request becomes its own trace: the agent cannot see
// in-process context propagation.
type spanQueue struct {
	// groups are the groups with queued spans, oldest first; index holds
	// empty ones too, so that their buffers are reused.
	groups []*spanGroup
	index  map[instanceKey]*spanGroup
	spans  int
	ids    *rand.ChaCha8
}

type instanceKey struct{ service, instance string }

type spanGroup struct {
	key  instanceKey
	host string
	// data is the group's ScopeSpans.spans fields, tag and length
	// included; ends[i] is where the i-th span's ends.
	data   []byte
	ends   []int
	queued bool
}

// Bounds on what the queue keeps for reuse: empty groups beyond
// maxIdleGroups are forgotten, and a buffer that a burst grew beyond
// maxIdleGroupBytes is released once sent.
const (
	maxIdleGroups     = 1024
	maxIdleGroupBytes = 1 << 20
)

func newSpanQueue() spanQueue {
	// Trace and span IDs need to be unique, not unpredictable.
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	return spanQueue{index: map[instanceKey]*spanGroup{}, ids: rand.NewChaCha8(seed)}
}

func (q *spanQueue) add(s *Span) {
	k := instanceKey{s.ServiceName, s.ServiceInstanceID}
	g := q.index[k]
	if g == nil {
		g = &spanGroup{key: k, host: s.HostName}
		q.index[k] = g
	}
	if !g.queued {
		g.queued = true
		q.groups = append(q.groups, g)
	}
	g.data = appendSpan(g.data, s, q.ids)
	g.ends = append(g.ends, len(g.data))
	q.spans++
}

// take appends to buf an ExportTraceServiceRequest with up to max of the
// oldest groups' spans, removes them from the queue, and says how many.
func (q *spanQueue) take(buf []byte, max int) ([]byte, int) {
	n := 0
	for n < max && len(q.groups) > 0 {
		g := q.groups[0]
		k := min(len(g.ends), max-n)
		buf = appendResourceSpans(buf, g, g.data[:g.ends[k-1]])
		n += k
		if k == len(g.ends) {
			g.queued = false
			g.data, g.ends = g.data[:0], g.ends[:0]
			if cap(g.data) > maxIdleGroupBytes {
				g.data, g.ends = nil, nil
			}
			q.groups[0] = nil
			q.groups = q.groups[1:]
			continue
		}
		cut := g.ends[k-1]
		g.data = g.data[:copy(g.data, g.data[cut:])]
		g.ends = g.ends[:copy(g.ends, g.ends[k:])]
		for i := range g.ends {
			g.ends[i] -= cut
		}
	}
	q.spans -= n
	if len(q.groups) == 0 {
		q.groups = q.groups[:0:0] // let a burst's backing array go
	}
	if len(q.index) > maxIdleGroups+len(q.groups) {
		for k, g := range q.index {
			if !g.queued {
				delete(q.index, k)
			}
		}
	}
	return buf, n
}

// scopeSize is the size of the InstrumentationScope message.
var scopeSize = tagLen(fieldScopeName) + varintLen(uint64(len(scopeName))) + len(scopeName)

func appendResourceSpans(buf []byte, g *spanGroup, spans []byte) []byte {
	res := strAttrSize(fieldResourceAttributes, "service.name", g.key.service) +
		strAttrSize(fieldResourceAttributes, "service.instance.id", g.key.instance) +
		strAttrSize(fieldResourceAttributes, "telemetry.sdk.name", "vigil-agent")
	if g.host != "" {
		res += strAttrSize(fieldResourceAttributes, "host.name", g.host)
	}
	scope := sizeLen(fieldScopeSpansScope, scopeSize) + len(spans)
	buf = appendTagLen(buf, fieldRequestResourceSpans, sizeLen(fieldResourceSpansResource, res)+sizeLen(fieldResourceSpansScope, scope))
	buf = appendTagLen(buf, fieldResourceSpansResource, res)
	buf = appendStrAttr(buf, fieldResourceAttributes, "service.name", g.key.service)
	buf = appendStrAttr(buf, fieldResourceAttributes, "service.instance.id", g.key.instance)
	if g.host != "" {
		buf = appendStrAttr(buf, fieldResourceAttributes, "host.name", g.host)
	}
	buf = appendStrAttr(buf, fieldResourceAttributes, "telemetry.sdk.name", "vigil-agent")
	buf = appendTagLen(buf, fieldResourceSpansScope, scope)
	buf = appendTagLen(buf, fieldScopeSpansScope, scopeSize)
	buf = appendString(buf, fieldScopeName, scopeName)
	return append(buf, spans...)
}

func spanSize(s *Span) int {
	n := sizeLen(fieldSpanTraceID, 16) + sizeLen(fieldSpanSpanID, 8) +
		tagLen(fieldSpanKind) + 1 +
		2*(tagLen(fieldSpanStart)+8)
	if s.Name != "" {
		n += sizeLen(fieldSpanName, len(s.Name))
	}
	for i := range s.Attributes {
		n += sizeLen(fieldSpanAttributes, keyValueSize(&s.Attributes[i]))
	}
	if s.Error {
		n += sizeLen(fieldSpanStatus, statusSize(s))
	}
	return n
}

func statusSize(s *Span) int {
	n := tagLen(fieldStatusCode) + 1
	if s.StatusMessage != "" {
		n += sizeLen(fieldStatusMessage, len(s.StatusMessage))
	}
	return n
}

func appendSpan(buf []byte, s *Span, ids *rand.ChaCha8) []byte {
	buf = appendTagLen(buf, fieldScopeSpansSpans, spanSize(s))
	var id [16]byte
	binary.LittleEndian.PutUint64(id[:8], ids.Uint64())
	binary.LittleEndian.PutUint64(id[8:], ids.Uint64())
	buf = appendTagLen(buf, fieldSpanTraceID, 16)
	buf = append(buf, id[:]...)
	binary.LittleEndian.PutUint64(id[:8], ids.Uint64())
	buf = appendTagLen(buf, fieldSpanSpanID, 8)
	buf = append(buf, id[:8]...)
	if s.Name != "" {
		buf = appendString(buf, fieldSpanName, s.Name)
	}
	kind := uint64(otlpSpanKindClient)
	if s.Kind == SpanKindServer {
		kind = otlpSpanKindServer
	}
	buf = appendTag(buf, fieldSpanKind, wireVarint)
	buf = append(buf, byte(kind))
	buf = appendTag(buf, fieldSpanStart, wireI64)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(s.Start.UnixNano()))
	buf = appendTag(buf, fieldSpanEnd, wireI64)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(s.End.UnixNano()))
	for i := range s.Attributes {
		buf = appendKeyValue(buf, fieldSpanAttributes, &s.Attributes[i])
	}
	if s.Error {
		buf = appendTagLen(buf, fieldSpanStatus, statusSize(s))
		if s.StatusMessage != "" {
			buf = appendString(buf, fieldStatusMessage, s.StatusMessage)
		}
		buf = appendTag(buf, fieldStatusCode, wireVarint)
		buf = append(buf, otlpStatusCodeError)
	}
	return buf
}

func keyValueSize(a *Attr) int {
	return sizeLen(fieldKeyValueKey, len(a.Key)) + sizeLen(fieldKeyValueValue, anyValueSize(a))
}

func anyValueSize(a *Attr) int {
	if a.IsInt {
		return tagLen(fieldAnyValueInt) + varintLen(uint64(a.Int))
	}
	return sizeLen(fieldAnyValueString, len(a.Str))
}

func appendKeyValue(buf []byte, field int, a *Attr) []byte {
	value := anyValueSize(a)
	buf = appendTagLen(buf, field, sizeLen(fieldKeyValueKey, len(a.Key))+sizeLen(fieldKeyValueValue, value))
	buf = appendString(buf, fieldKeyValueKey, a.Key)
	buf = appendTagLen(buf, fieldKeyValueValue, value)
	if a.IsInt {
		buf = appendTag(buf, fieldAnyValueInt, wireVarint)
		return binary.AppendUvarint(buf, uint64(a.Int))
	}
	return appendString(buf, fieldAnyValueString, a.Str)
}

func strAttrSize(field int, key, value string) int {
	a := StrAttr(key, value)
	return sizeLen(field, keyValueSize(&a))
}

func appendStrAttr(buf []byte, field int, key, value string) []byte {
	a := StrAttr(key, value)
	return appendKeyValue(buf, field, &a)
}

// sizeLen is the encoded size of a length-delimited field of n bytes.
func sizeLen(field, n int) int { return tagLen(field) + varintLen(uint64(n)) + n }

func tagLen(field int) int { return varintLen(uint64(field) << 3) }

func varintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func appendTag(buf []byte, field int, wire uint64) []byte {
	return binary.AppendUvarint(buf, uint64(field)<<3|wire)
}

func appendTagLen(buf []byte, field, n int) []byte {
	buf = appendTag(buf, field, wireLen)
	return binary.AppendUvarint(buf, uint64(n))
}

func appendString(buf []byte, field int, s string) []byte {
	buf = appendTagLen(buf, field, len(s))
	return append(buf, s...)
}
