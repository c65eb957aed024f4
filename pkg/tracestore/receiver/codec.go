package receiver

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// GogoCodec is a gRPC codec for gogo-generated messages (Jaeger's api_v2):
// they carry custom types (TraceID, SpanID) that the standard protobuf
// codec's reflection cannot encode, but they marshal themselves. Other
// messages fall back to the standard protobuf encoding.
type GogoCodec struct{}

var _ encoding.CodecV2 = GogoCodec{}

type gogoMessage interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// Name implements encoding.CodecV2.
func (GogoCodec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2.
func (GogoCodec) Marshal(v any) (mem.BufferSlice, error) {
	var (
		b   []byte
		err error
	)
	switch m := v.(type) {
	case gogoMessage:
		b, err = m.Marshal()
	case proto.Message:
		b, err = proto.Marshal(m)
	case protoadapt.MessageV1:
		b, err = proto.Marshal(protoadapt.MessageV2Of(m))
	default:
		return nil, fmt.Errorf("gogo codec: cannot marshal %T", v)
	}
	if err != nil {
		return nil, fmt.Errorf("gogo codec: marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal implements encoding.CodecV2.
func (GogoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b := data.Materialize()
	var err error
	switch m := v.(type) {
	case gogoMessage:
		err = m.Unmarshal(b)
	case proto.Message:
		err = proto.Unmarshal(b, m)
	case protoadapt.MessageV1:
		err = proto.Unmarshal(b, protoadapt.MessageV2Of(m))
	default:
		return fmt.Errorf("gogo codec: cannot unmarshal into %T", v)
	}
	if err != nil {
		return fmt.Errorf("gogo codec: unmarshal %T: %w", v, err)
	}
	return nil
}
