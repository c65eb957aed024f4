package translate

import (
	"math/bits"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// SpanSize returns the size in bytes of the span's OTLP protobuf encoding
// as pdata writes it (the opentelemetry.proto.trace.v1.Span message,
// without the tag and length that embed it in its parent; pdata writes the
// ID fields and the status even when they are empty). It computes the size from the
// fields instead of encoding the span: span size limits and the span
// metrics size counter need it for every span, and pdata only sizes whole
// Traces, which would mean copying each span first.
func SpanSize(s ptrace.Span) int {
	n := traceIDField(s.TraceID()) + spanIDField(s.SpanID()) + spanIDField(s.ParentSpanID())
	n += stringField(s.TraceState().AsRaw())
	if s.Flags() != 0 {
		n += 2 + 4 // field 16: two-byte tag, fixed32
	}
	n += stringField(s.Name())
	if k := s.Kind(); k != 0 {
		n += 1 + varintSize(uint64(k))
	}
	if s.StartTimestamp() != 0 {
		n += 1 + 8
	}
	if s.EndTimestamp() != 0 {
		n += 1 + 8
	}
	n += attributesSize(s.Attributes())
	n += countField(s.DroppedAttributesCount())
	events := s.Events()
	for i := 0; i < events.Len(); i++ {
		e := events.At(i)
		m := 0
		if e.Timestamp() != 0 {
			m += 1 + 8
		}
		m += stringField(e.Name())
		m += attributesSize(e.Attributes())
		m += countField(e.DroppedAttributesCount())
		n += embedded(m)
	}
	n += countField(s.DroppedEventsCount())
	links := s.Links()
	for i := 0; i < links.Len(); i++ {
		l := links.At(i)
		m := traceIDField(l.TraceID()) + spanIDField(l.SpanID())
		m += stringField(l.TraceState().AsRaw())
		m += attributesSize(l.Attributes())
		m += countField(l.DroppedAttributesCount())
		if l.Flags() != 0 {
			m += 1 + 4
		}
		n += embedded(m)
	}
	n += countField(s.DroppedLinksCount())
	st := s.Status()
	m := stringField(st.Message())
	if c := st.Code(); c != 0 {
		m += 1 + varintSize(uint64(c))
	}
	return n + embedded(m)
}

func traceIDField(id pcommon.TraceID) int {
	if id.IsEmpty() {
		return 2
	}
	return 2 + 16
}

func spanIDField(id pcommon.SpanID) int {
	if id.IsEmpty() {
		return 2
	}
	return 2 + 8
}

func varintSize(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// embedded is the size of a length-delimited field with a one-byte tag.
func embedded(size int) int { return 1 + varintSize(uint64(size)) + size }

func stringField(s string) int {
	if s == "" {
		return 0
	}
	return embedded(len(s))
}

func countField(c uint32) int {
	if c == 0 {
		return 0
	}
	return 1 + varintSize(uint64(c))
}

func attributesSize(m pcommon.Map) int {
	n := 0
	for k, v := range m.All() {
		n += embedded(keyValueSize(k, v))
	}
	return n
}

func keyValueSize(k string, v pcommon.Value) int {
	n := stringField(k)
	if v.Type() != pcommon.ValueTypeEmpty {
		n += embedded(anyValueSize(v))
	} else {
		n += embedded(0)
	}
	return n
}

func anyValueSize(v pcommon.Value) int {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return embedded(len(v.Str()))
	case pcommon.ValueTypeBool:
		return 1 + 1
	case pcommon.ValueTypeInt:
		return 1 + varintSize(uint64(v.Int()))
	case pcommon.ValueTypeDouble:
		return 1 + 8
	case pcommon.ValueTypeBytes:
		return embedded(v.Bytes().Len())
	case pcommon.ValueTypeSlice:
		s := v.Slice()
		m := 0
		for i := 0; i < s.Len(); i++ {
			m += embedded(anyValueSize(s.At(i)))
		}
		return embedded(m)
	case pcommon.ValueTypeMap:
		m := 0
		for k, e := range v.Map().All() {
			m += embedded(keyValueSize(k, e))
		}
		return embedded(m)
	}
	return 0
}
