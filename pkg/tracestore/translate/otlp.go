package translate

import (
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// OTLPJSON renders spans as OTLP/JSON (hex IDs, numeric enums), the form
// Jaeger's api_v3 and Tempo's JSON responses use.
func OTLPJSON(td ptrace.Traces) ([]byte, error) {
	m := ptrace.JSONMarshaler{}
	b, err := m.MarshalTraces(td)
	if err != nil {
		return nil, fmt.Errorf("encode OTLP JSON: %w", err)
	}
	return b, nil
}

// OTLPProto renders spans as OTLP protobuf (ExportTraceServiceRequest /
// TracesData bytes; the two are wire-identical).
func OTLPProto(td ptrace.Traces) ([]byte, error) {
	m := ptrace.ProtoMarshaler{}
	b, err := m.MarshalTraces(td)
	if err != nil {
		return nil, fmt.Errorf("encode OTLP protobuf: %w", err)
	}
	return b, nil
}

// OTLPFromJSON decodes OTLP/JSON.
func OTLPFromJSON(b []byte) (ptrace.Traces, error) {
	u := ptrace.JSONUnmarshaler{}
	td, err := u.UnmarshalTraces(b)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode OTLP JSON: %w", err)
	}
	return td, nil
}

// OTLPFromProto decodes OTLP protobuf.
func OTLPFromProto(b []byte) (ptrace.Traces, error) {
	u := ptrace.ProtoUnmarshaler{}
	td, err := u.UnmarshalTraces(b)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode OTLP protobuf: %w", err)
	}
	return td, nil
}

// Envelope wraps raw OTLP JSON in {"result": ...} as Jaeger's api_v3 does.
func Envelope(raw []byte) ([]byte, error) {
	b, err := json.Marshal(struct {
		Result json.RawMessage `json:"result"`
	}{Result: raw})
	if err != nil {
		return nil, fmt.Errorf("encode result envelope: %w", err)
	}
	return b, nil
}
