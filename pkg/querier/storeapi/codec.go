// Package storeapi serves and consumes the Thanos StoreAPI (storepb.Store) on top of
// Prometheus storage interfaces. Ingesters, the store-gateway and the querier's own Thanos
// interop endpoint all share the server; the querier uses the client side.
package storeapi

import (
	"bytes"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// gogoMessage is what gogo-generated messages (storepb, infopb, ...) implement. The default
// gRPC codec goes through protobuf-go reflection, which does not understand gogo custom
// types such as labelpb.ZLabel, so these messages must use their own (un)marshallers.
type gogoMessage interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// Codec is a gRPC codec that marshals gogo-generated messages with their generated code
// and everything else with protobuf-go. Use it with grpc.ForceCodec on clients and
// grpc.ForceServerCodec on servers that exchange Thanos protos.
type Codec struct{}

var _ encoding.Codec = Codec{}

// Name implements encoding.Codec. It keeps the "proto" name so the wire content-type is
// the standard application/grpc+proto and any peer can talk to us.
func (Codec) Name() string { return "proto" }

// Marshal implements encoding.Codec.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case gogoMessage:
		return m.Marshal()
	case proto.Message:
		return proto.Marshal(m)
	case protoadapt.MessageV1:
		return proto.Marshal(protoadapt.MessageV2Of(m))
	default:
		return nil, fmt.Errorf("storeapi codec: cannot marshal %T", v)
	}
}

// Unmarshal implements encoding.Codec. gRPC recycles the receive buffer once Unmarshal
// returns, while gogo messages (labels, chunk data) may alias it, so decode from a copy.
func (Codec) Unmarshal(data []byte, v any) error {
	data = bytes.Clone(data)
	switch m := v.(type) {
	case gogoMessage:
		return m.Unmarshal(data)
	case proto.Message:
		return proto.Unmarshal(data, m)
	case protoadapt.MessageV1:
		return proto.Unmarshal(data, protoadapt.MessageV2Of(m))
	default:
		return fmt.Errorf("storeapi codec: cannot unmarshal into %T", v)
	}
}
