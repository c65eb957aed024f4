package tempo

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-obs/vigil/pkg/tracestore"
)

// ParseTraceQL translates the subset of TraceQL that Grafana's Tempo search
// builder writes into a SearchRequest: one spanset of conditions joined by
// &&, each an equality on an attribute, the span name or kind, or a bound
// on duration:
//
//	{ resource.service.name = "api" && span.http.method = "GET" && name = "GET /" && kind = server && duration > 100ms }
//
// Duration bounds apply to the trace (what the store indexes), not to the
// matching span as in Tempo. Anything else is an error naming what is not
// supported, rather than a search that silently ignores part of the query.
func ParseTraceQL(q string, req *tracestore.SearchRequest) error {
	s := strings.TrimSpace(q)
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return fmt.Errorf("TraceQL %q: only a single spanset { ... } is supported", q)
	}
	body := strings.TrimSpace(s[1 : len(s)-1])
	if body == "" {
		return nil
	}
	if strings.ContainsAny(body, "{}") {
		return fmt.Errorf("TraceQL %q: only a single spanset { ... } is supported", q)
	}
	if strings.ContainsAny(body, "|()") {
		return fmt.Errorf("TraceQL %q: only conditions joined by && are supported", q)
	}
	for _, cond := range splitConditions(body) {
		if err := addCondition(strings.TrimSpace(cond), req); err != nil {
			return fmt.Errorf("TraceQL %q: %w", q, err)
		}
	}
	return nil
}

// splitConditions splits on && outside double quotes.
func splitConditions(s string) []string {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case !inQuote && strings.HasPrefix(s[i:], "&&"):
			out = append(out, s[start:i])
			start = i + 2
			i++
		}
	}
	return append(out, s[start:])
}

func addCondition(cond string, req *tracestore.SearchRequest) error {
	if cond == "" {
		return fmt.Errorf("empty condition")
	}
	var lhs, op, rhs string
	for _, o := range []string{">=", "<=", "!=", "=~", "!~", "=", ">", "<"} {
		if i := strings.Index(cond, o); i > 0 && !strings.Contains(cond[:i], `"`) {
			lhs, op, rhs = strings.TrimSpace(cond[:i]), o, strings.TrimSpace(cond[i+len(o):])
			break
		}
	}
	if op == "" || lhs == "" || rhs == "" {
		return fmt.Errorf("condition %q: want <field> <operator> <value>", cond)
	}
	if lhs == "duration" || lhs == "traceDuration" {
		d, err := time.ParseDuration(rhs)
		if err != nil {
			return fmt.Errorf("condition %q: %v", cond, err)
		}
		switch op {
		case ">", ">=":
			req.MinDuration = d
		case "<", "<=":
			req.MaxDuration = d
		default:
			return fmt.Errorf("condition %q: duration supports >, >=, < and <=", cond)
		}
		return nil
	}
	if op != "=" {
		return fmt.Errorf("condition %q: operator %s is not supported, only = (and duration bounds)", cond, op)
	}
	val, err := value(rhs)
	if err != nil {
		return fmt.Errorf("condition %q: %v", cond, err)
	}
	switch lhs {
	case "resource.service.name", ".service.name":
		req.Service = val
	case "name":
		req.Operation = val
	case "kind":
		req.SpanKind = val
	case "status":
		// The store matches otel.status_code against the span status (the TraceQL enum
		// words error, ok and unset), as Grafana's search builder writes it.
		switch strings.ToLower(val) {
		case "error", "ok", "unset":
		default:
			return fmt.Errorf("condition %q: status is one of error, ok, unset", cond)
		}
		if req.Attributes == nil {
			req.Attributes = map[string]string{}
		}
		req.Attributes["otel.status_code"] = strings.ToLower(val)
	case "statusMessage", "rootName", "rootServiceName":
		return fmt.Errorf("condition %q: %s is not supported", cond, lhs)
	default:
		key := lhs
		for _, p := range []string{"resource.", "span.", "."} {
			if strings.HasPrefix(key, p) {
				key = strings.TrimPrefix(key, p)
				break
			}
		}
		if key == "" || strings.ContainsAny(key, " \"") {
			return fmt.Errorf("condition %q: invalid attribute %q", cond, lhs)
		}
		if req.Attributes == nil {
			req.Attributes = map[string]string{}
		}
		req.Attributes[key] = val
	}
	return nil
}

// value reads a TraceQL literal as the text the store compares: a quoted
// string, a number, a boolean or a bare enum word (server, error).
func value(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		v, err := strconv.Unquote(s)
		if err != nil {
			return "", fmt.Errorf("bad string literal %s", s)
		}
		return v, nil
	}
	for _, c := range s {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return "", fmt.Errorf("bad literal %s", s)
		}
	}
	return s, nil
}
