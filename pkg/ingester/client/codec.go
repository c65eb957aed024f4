package client

import (
	"fmt"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// CodecName is the content-subtype the codec registers under. It is "proto" on purpose:
// peers that do not force this codec (Thanos Querier, grpcurl) still speak plain
// protobuf on the wire, so the two interoperate.
const CodecName = "proto"

// gogoMessage is what gogo-generated messages (prompb, thanos storepb, ...) and Vigil's
// hand-encoded messages implement. Calling these directly avoids the reflection-based
// legacy path google.golang.org/protobuf takes for gogo types, which is slower and
// does not understand gogo customtype fields.
type gogoMessage interface {
	Size() int
	MarshalToSizedBuffer([]byte) (int, error)
	Unmarshal([]byte) error
}

// simpleMessage is the smaller contract used by hand-written messages such as
// PushResponse.
type simpleMessage interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// Codec is a gRPC encoding.CodecV2 that uses the messages' own Marshal/Unmarshal
// methods when present and falls back to google.golang.org/protobuf otherwise.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return CodecName }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case gogoMessage:
		size := m.Size()
		if mem.IsBelowBufferPoolingThreshold(size) {
			buf := make([]byte, size)
			n, err := m.MarshalToSizedBuffer(buf)
			if err != nil {
				return nil, fmt.Errorf("marshal %T: %w", v, err)
			}
			return mem.BufferSlice{mem.SliceBuffer(buf[len(buf)-n:])}, nil
		}
		pool := mem.DefaultBufferPool()
		buf := pool.Get(size)
		n, err := m.MarshalToSizedBuffer((*buf)[:size])
		if err != nil {
			pool.Put(buf)
			return nil, fmt.Errorf("marshal %T: %w", v, err)
		}
		// MarshalToSizedBuffer writes backwards from the end of the buffer.
		*buf = (*buf)[size-n : size]
		return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
	case simpleMessage:
		b, err := m.Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pm := messageV2Of(v)
	if pm == nil {
		// Not a protobuf message we know, e.g. OpenTelemetry pdata requests: their package
		// registers its own "proto" codec with gRPC, so hand over to whatever is registered.
		if c := registeredCodec(); c != nil {
			return c.Marshal(v)
		}
		return nil, fmt.Errorf("codec: cannot marshal %T: not a protobuf message", v)
	}
	b, err := proto.Marshal(pm)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// registeredCodec is the process-wide gRPC codec for CodecName, unless that is this codec.
func registeredCodec() encoding.CodecV2 {
	c := encoding.GetCodecV2(CodecName)
	if _, self := c.(Codec); self {
		return nil
	}
	return c
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(interface{ UnmarshalBuffers(mem.BufferSlice) error }); ok {
		// Receivers that manage their own memory (the querier's Series decoder copies
		// into pooled slabs) take the buffers as they are.
		if err := m.UnmarshalBuffers(data); err != nil {
			return fmt.Errorf("unmarshal %T: %w", v, err)
		}
		return nil
	}
	// Materialize copies into a fresh slice: gogo messages keep sub-slices of the input
	// (bytes fields such as chunk data), so the buffer must not be returned to a pool.
	buf := data.Materialize()
	switch m := v.(type) {
	case *prompb.WriteRequest:
		// The ingester's hot path: strings alias buf, which is this message's own copy.
		if err := unmarshalWriteRequest(buf, m); err != nil {
			return fmt.Errorf("unmarshal %T: %w", v, err)
		}
		return nil
	case gogoMessage:
		if err := m.Unmarshal(buf); err != nil {
			return fmt.Errorf("unmarshal %T: %w", v, err)
		}
		return nil
	case interface{ Unmarshal([]byte) error }:
		// Hand-written messages and receive-only decoders (the querier decodes Series
		// responses straight into its own structures).
		if err := m.Unmarshal(buf); err != nil {
			return fmt.Errorf("unmarshal %T: %w", v, err)
		}
		return nil
	}
	pm := messageV2Of(v)
	if pm == nil {
		if c := registeredCodec(); c != nil {
			return c.Unmarshal(data, v)
		}
		return fmt.Errorf("codec: cannot unmarshal into %T: not a protobuf message", v)
	}
	if err := proto.Unmarshal(buf, pm); err != nil {
		return fmt.Errorf("unmarshal %T: %w", v, err)
	}
	return nil
}

func messageV2Of(v any) proto.Message {
	switch m := v.(type) {
	case protoadapt.MessageV2:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}
