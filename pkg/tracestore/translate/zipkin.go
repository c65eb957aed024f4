package translate

import (
	"encoding/json"
	"fmt"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/zipkin/zipkinv2"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ZipkinSpansFromOTLP converts spans to Zipkin v2 span models with the
// collector-contrib translator (status → error tag, events → annotations,
// resource service.name → localEndpoint.serviceName).
func ZipkinSpansFromOTLP(td ptrace.Traces) ([]*zipkinmodel.SpanModel, error) {
	spans, err := zipkinv2.FromTranslator{}.FromTraces(td)
	if err != nil {
		return nil, fmt.Errorf("OTLP to zipkin: %w", err)
	}
	return spans, nil
}

// ZipkinJSONFromOTLP renders spans as a Zipkin v2 JSON array.
func ZipkinJSONFromOTLP(td ptrace.Traces) ([]byte, error) {
	spans, err := ZipkinSpansFromOTLP(td)
	if err != nil {
		return nil, err
	}
	if spans == nil {
		spans = []*zipkinmodel.SpanModel{}
	}
	b, err := json.Marshal(spans)
	if err != nil {
		return nil, fmt.Errorf("encode zipkin JSON: %w", err)
	}
	return b, nil
}

// ZipkinJSONToOTLP decodes a Zipkin v2 JSON array (the body of
// POST /api/v2/spans). String tags are kept as strings, as the OpenTelemetry
// Collector's Zipkin receiver does by default.
func ZipkinJSONToOTLP(body []byte) (ptrace.Traces, error) {
	td, err := zipkinv2.NewJSONTracesUnmarshaler(false).UnmarshalTraces(body)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode zipkin JSON: %w", err)
	}
	return td, nil
}

// ZipkinProtoToOTLP decodes a proto3 zipkin.proto3.ListOfSpans.
func ZipkinProtoToOTLP(body []byte, debug bool) (ptrace.Traces, error) {
	td, err := zipkinv2.NewProtobufTracesUnmarshaler(debug, false).UnmarshalTraces(body)
	if err != nil {
		return ptrace.Traces{}, fmt.Errorf("decode zipkin protobuf: %w", err)
	}
	return td, nil
}
