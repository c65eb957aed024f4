// Package translate converts between Vigil's internal span model (OTLP
// ptrace.Traces) and the wire/JSON shapes of the Jaeger, Zipkin and Tempo
// query APIs. The semantic mapping (status → error tag, events → logs, links
// → FOLLOWS_FROM, resource → process) is delegated to the OpenTelemetry
// collector-contrib translators so Vigil answers exactly as a Jaeger or
// Zipkin backend fed by the OpenTelemetry Collector would.
package translate

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	model "github.com/jaegertracing/jaeger-idl/model/v1"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Jaeger UI JSON model. These mirror jaeger's internal/uimodel (which cannot
// be imported: it is an internal package) field for field, including the
// omitempty choices, because jaeger-ui and Grafana parse these bytes.

// JaegerTrace is one element of `data` in the Jaeger v1 API.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
	Warnings  []string                 `json:"warnings"`
}

// JaegerSpan is a span in the Jaeger UI model.
type JaegerSpan struct {
	TraceID       string            `json:"traceID"`
	SpanID        string            `json:"spanID"`
	ParentSpanID  string            `json:"parentSpanID,omitempty"`
	Flags         uint32            `json:"flags,omitempty"`
	OperationName string            `json:"operationName"`
	References    []JaegerReference `json:"references"`
	StartTime     uint64            `json:"startTime"`
	Duration      uint64            `json:"duration"`
	Tags          []JaegerKeyValue  `json:"tags"`
	Logs          []JaegerLog       `json:"logs"`
	ProcessID     string            `json:"processID,omitempty"`
	Process       *JaegerProcess    `json:"process,omitempty"`
	Warnings      []string          `json:"warnings"`
}

// JaegerReference is a span reference (CHILD_OF or FOLLOWS_FROM).
type JaegerReference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerProcess is the emitting process of spans (an OTLP resource).
type JaegerProcess struct {
	ServiceName string           `json:"serviceName"`
	Tags        []JaegerKeyValue `json:"tags"`
}

// JaegerLog is a timestamped set of fields (an OTLP span event).
type JaegerLog struct {
	Timestamp uint64           `json:"timestamp"`
	Fields    []JaegerKeyValue `json:"fields"`
}

// JaegerKeyValue is a typed tag. Value is a string, bool, float64, int64
// (or its decimal string when beyond ±2^53) or base64 bytes.
type JaegerKeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type,omitempty"`
	Value any    `json:"value"`
}

// JaegerDependencyLink is an edge of the Jaeger dependency graph.
type JaegerDependencyLink struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount uint64 `json:"callCount"`
}

// Jaeger UI tag type names.
const (
	jaegerTypeString  = "string"
	jaegerTypeBool    = "bool"
	jaegerTypeInt64   = "int64"
	jaegerTypeFloat64 = "float64"
	jaegerTypeBinary  = "binary"
)

// maxSafeJSONInt is the largest integer a JavaScript number holds exactly;
// jaeger-ui receives larger int64 tags as strings so they are not rounded.
const maxSafeJSONInt = 1<<53 - 1

// JaegerTracesFromOTLP converts spans to Jaeger UI traces, one per trace ID,
// in order of first appearance of each trace ID in td.
func JaegerTracesFromOTLP(td ptrace.Traces) []JaegerTrace {
	batches := jaegertranslator.ProtoFromTraces(td)
	type builder struct {
		trace     *JaegerTrace
		processes map[string]string // process identity → "pN"
	}
	var (
		order    []string
		builders = map[string]*builder{}
	)
	for _, batch := range batches {
		for _, span := range batch.Spans {
			tid := formatTraceID(span.TraceID)
			b, ok := builders[tid]
			if !ok {
				b = &builder{
					trace:     &JaegerTrace{TraceID: tid, Spans: []JaegerSpan{}, Processes: map[string]JaegerProcess{}},
					processes: map[string]string{},
				}
				builders[tid] = b
				order = append(order, tid)
			}
			proc := batch.Process
			if span.Process != nil {
				proc = span.Process
			}
			jp := jaegerProcess(proc)
			identity := processIdentity(jp)
			pid, ok := b.processes[identity]
			if !ok {
				pid = "p" + strconv.Itoa(len(b.processes)+1)
				b.processes[identity] = pid
				b.trace.Processes[pid] = jp
			}
			js := jaegerSpan(span)
			js.ProcessID = pid
			b.trace.Spans = append(b.trace.Spans, js)
		}
	}
	out := make([]JaegerTrace, 0, len(order))
	for _, tid := range order {
		out = append(out, *builders[tid].trace)
	}
	return out
}

func jaegerProcess(p *model.Process) JaegerProcess {
	if p == nil {
		return JaegerProcess{Tags: []JaegerKeyValue{}}
	}
	return JaegerProcess{ServiceName: p.ServiceName, Tags: jaegerKeyValues(p.Tags)}
}

// processIdentity is a stable key for deduplicating processes within a trace,
// as Jaeger's ProcessHashtable does: same service and same tags → same pN.
func processIdentity(p JaegerProcess) string {
	b, _ := json.Marshal(p) // cannot fail: only strings, numbers, bools and []byte
	return string(b)
}

func jaegerSpan(s *model.Span) JaegerSpan {
	js := JaegerSpan{
		TraceID:       formatTraceID(s.TraceID),
		SpanID:        formatSpanID(s.SpanID),
		Flags:         uint32(s.Flags),
		OperationName: s.OperationName,
		References:    make([]JaegerReference, 0, len(s.References)),
		StartTime:     model.TimeAsEpochMicroseconds(s.StartTime),
		Duration:      model.DurationAsMicroseconds(s.Duration),
		Tags:          jaegerKeyValues(s.Tags),
		Logs:          make([]JaegerLog, 0, len(s.Logs)),
		Warnings:      s.Warnings,
	}
	for _, ref := range s.References {
		rt := "CHILD_OF"
		if ref.RefType == model.SpanRefType_FOLLOWS_FROM {
			rt = "FOLLOWS_FROM"
		}
		js.References = append(js.References, JaegerReference{RefType: rt, TraceID: formatTraceID(ref.TraceID), SpanID: formatSpanID(ref.SpanID)})
	}
	for _, l := range s.Logs {
		js.Logs = append(js.Logs, JaegerLog{Timestamp: model.TimeAsEpochMicroseconds(l.Timestamp), Fields: jaegerKeyValues(l.Fields)})
	}
	return js
}

func jaegerKeyValues(kvs []model.KeyValue) []JaegerKeyValue {
	out := make([]JaegerKeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, jaegerKeyValue(kv))
	}
	return out
}

func jaegerKeyValue(kv model.KeyValue) JaegerKeyValue {
	switch kv.VType {
	case model.ValueType_BOOL:
		return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeBool, Value: kv.VBool}
	case model.ValueType_INT64:
		if kv.VInt64 > maxSafeJSONInt || kv.VInt64 < -maxSafeJSONInt {
			return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeInt64, Value: strconv.FormatInt(kv.VInt64, 10)}
		}
		return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeInt64, Value: kv.VInt64}
	case model.ValueType_FLOAT64:
		return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeFloat64, Value: kv.VFloat64}
	case model.ValueType_BINARY:
		return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeBinary, Value: kv.VBinary}
	default:
		return JaegerKeyValue{Key: kv.Key, Type: jaegerTypeString, Value: kv.VStr}
	}
}

// formatTraceID always renders 32 hex digits, as Jaeger v2 does for traces
// that came from OTLP (the fixture ui_01.json shows the same).
func formatTraceID(t model.TraceID) string {
	return fmt.Sprintf("%016x%016x", t.High, t.Low)
}

func formatSpanID(s model.SpanID) string {
	return fmt.Sprintf("%016x", uint64(s))
}

// JaegerTraceToOTLP converts a Jaeger UI trace back to OTLP through the
// jaeger-idl model and the upstream translator. Vigil never stores UI JSON;
// this exists so that Jaeger-shaped test fixtures can be fed in.
func JaegerTraceToOTLP(t JaegerTrace) (ptrace.Traces, error) {
	batches := map[string]*model.Batch{}
	var order []string
	for i, js := range t.Spans {
		span, err := modelSpan(js)
		if err != nil {
			return ptrace.Traces{}, fmt.Errorf("span %d (%s): %w", i, js.SpanID, err)
		}
		b, ok := batches[js.ProcessID]
		if !ok {
			jp, found := t.Processes[js.ProcessID]
			if !found && js.Process != nil {
				jp = *js.Process
			}
			tags, err := modelKeyValues(jp.Tags)
			if err != nil {
				return ptrace.Traces{}, fmt.Errorf("process %s: %w", js.ProcessID, err)
			}
			b = &model.Batch{Process: &model.Process{ServiceName: jp.ServiceName, Tags: tags}}
			batches[js.ProcessID] = b
			order = append(order, js.ProcessID)
		}
		b.Spans = append(b.Spans, span)
	}
	// One batch at a time: the translator regroups a list of batches
	// through a map, which would make the resource order random.
	td := ptrace.NewTraces()
	for _, pid := range order {
		part, err := jaegertranslator.ProtoToTraces([]*model.Batch{batches[pid]})
		if err != nil {
			return ptrace.Traces{}, fmt.Errorf("jaeger to OTLP (process %s): %w", pid, err)
		}
		part.ResourceSpans().MoveAndAppendTo(td.ResourceSpans())
	}
	return td, nil
}

func modelSpan(js JaegerSpan) (*model.Span, error) {
	tid, err := model.TraceIDFromString(js.TraceID)
	if err != nil {
		return nil, fmt.Errorf("trace ID: %w", err)
	}
	sid, err := model.SpanIDFromString(js.SpanID)
	if err != nil {
		return nil, fmt.Errorf("span ID: %w", err)
	}
	s := &model.Span{
		TraceID:       tid,
		SpanID:        sid,
		OperationName: js.OperationName,
		Flags:         model.Flags(js.Flags),
		StartTime:     model.EpochMicrosecondsAsTime(js.StartTime),
		Duration:      model.MicrosecondsAsDuration(js.Duration),
		Warnings:      js.Warnings,
	}
	for _, r := range js.References {
		rt, err := model.TraceIDFromString(r.TraceID)
		if err != nil {
			return nil, fmt.Errorf("reference trace ID: %w", err)
		}
		rs, err := model.SpanIDFromString(r.SpanID)
		if err != nil {
			return nil, fmt.Errorf("reference span ID: %w", err)
		}
		ref := model.NewChildOfRef(rt, rs)
		if r.RefType == "FOLLOWS_FROM" {
			ref = model.NewFollowsFromRef(rt, rs)
		}
		s.References = append(s.References, ref)
	}
	if s.Tags, err = modelKeyValues(js.Tags); err != nil {
		return nil, err
	}
	for _, l := range js.Logs {
		fields, err := modelKeyValues(l.Fields)
		if err != nil {
			return nil, fmt.Errorf("log: %w", err)
		}
		s.Logs = append(s.Logs, model.Log{Timestamp: model.EpochMicrosecondsAsTime(l.Timestamp), Fields: fields})
	}
	return s, nil
}

func modelKeyValues(kvs []JaegerKeyValue) ([]model.KeyValue, error) {
	out := make([]model.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		m, err := modelKeyValue(kv)
		if err != nil {
			return nil, fmt.Errorf("tag %q: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func modelKeyValue(kv JaegerKeyValue) (model.KeyValue, error) {
	switch kv.Type {
	case jaegerTypeBool:
		v, ok := kv.Value.(bool)
		if !ok {
			return model.KeyValue{}, fmt.Errorf("bool tag holds %T", kv.Value)
		}
		return model.Bool(kv.Key, v), nil
	case jaegerTypeInt64:
		switch v := kv.Value.(type) {
		case float64:
			return model.Int64(kv.Key, int64(v)), nil
		case int64:
			return model.Int64(kv.Key, v), nil
		case json.Number:
			i, err := v.Int64()
			if err != nil {
				return model.KeyValue{}, fmt.Errorf("int64 tag: %w", err)
			}
			return model.Int64(kv.Key, i), nil
		case string:
			i, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return model.KeyValue{}, fmt.Errorf("int64 tag: %w", err)
			}
			return model.Int64(kv.Key, i), nil
		}
		return model.KeyValue{}, fmt.Errorf("int64 tag holds %T", kv.Value)
	case jaegerTypeFloat64:
		switch v := kv.Value.(type) {
		case float64:
			return model.Float64(kv.Key, v), nil
		case json.Number:
			f, err := v.Float64()
			if err != nil {
				return model.KeyValue{}, fmt.Errorf("float64 tag: %w", err)
			}
			return model.Float64(kv.Key, f), nil
		}
		return model.KeyValue{}, fmt.Errorf("float64 tag holds %T", kv.Value)
	case jaegerTypeBinary:
		switch v := kv.Value.(type) {
		case []byte:
			return model.Binary(kv.Key, v), nil
		case string:
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return model.KeyValue{}, fmt.Errorf("binary tag: %w", err)
			}
			return model.Binary(kv.Key, b), nil
		}
		return model.KeyValue{}, fmt.Errorf("binary tag holds %T", kv.Value)
	case jaegerTypeString, "":
		s, ok := kv.Value.(string)
		if !ok {
			return model.KeyValue{}, fmt.Errorf("string tag holds %T", kv.Value)
		}
		return model.String(kv.Key, s), nil
	}
	return model.KeyValue{}, fmt.Errorf("unknown tag type %q", kv.Type)
}

// SpanKindName renders an OTLP span kind the way Jaeger's API accepts and
// returns it ("server", "client", ... ; "" for unspecified).
func SpanKindName(k ptrace.SpanKind) string {
	switch k {
	case ptrace.SpanKindServer:
		return "server"
	case ptrace.SpanKindClient:
		return "client"
	case ptrace.SpanKindProducer:
		return "producer"
	case ptrace.SpanKindConsumer:
		return "consumer"
	case ptrace.SpanKindInternal:
		return "internal"
	}
	return ""
}

// ParseTraceID accepts the hex forms clients send: 1 to 32 hex digits
// (Jaeger and Zipkin allow 16-digit IDs and drop leading zeros), left-padded
// to 128 bits.
func ParseTraceID(s string) (pcommon.TraceID, error) {
	var id pcommon.TraceID
	if s == "" || len(s) > 32 {
		return id, fmt.Errorf("invalid trace ID %q: want 1 to 32 hex digits", s)
	}
	padded := strings.Repeat("0", 32-len(s)) + s
	if _, err := hex.Decode(id[:], []byte(padded)); err != nil {
		return pcommon.TraceID{}, fmt.Errorf("invalid trace ID %q: %w", s, err)
	}
	return id, nil
}

// ParseSpanID accepts 1 to 16 hex digits.
func ParseSpanID(s string) (pcommon.SpanID, error) {
	var id pcommon.SpanID
	if s == "" || len(s) > 16 {
		return id, fmt.Errorf("invalid span ID %q: want 1 to 16 hex digits", s)
	}
	padded := strings.Repeat("0", 16-len(s)) + s
	if _, err := hex.Decode(id[:], []byte(padded)); err != nil {
		return pcommon.SpanID{}, fmt.Errorf("invalid span ID %q: %w", s, err)
	}
	return id, nil
}

// SortSpans orders the spans of a trace by start time (then span ID) and
// renumbers its processes p1, p2, ... in that order, so a response does
// not depend on which replica or block returned which spans first.
func SortSpans(t *JaegerTrace) {
	sort.SliceStable(t.Spans, func(i, j int) bool {
		a, b := t.Spans[i], t.Spans[j]
		if a.StartTime != b.StartTime {
			return a.StartTime < b.StartTime
		}
		return a.SpanID < b.SpanID
	})
	renamed := map[string]string{}
	procs := make(map[string]JaegerProcess, len(t.Processes))
	for i := range t.Spans {
		old := t.Spans[i].ProcessID
		id, ok := renamed[old]
		if !ok {
			id = "p" + strconv.Itoa(len(renamed)+1)
			renamed[old] = id
			procs[id] = t.Processes[old]
		}
		t.Spans[i].ProcessID = id
	}
	t.Processes = procs
}
