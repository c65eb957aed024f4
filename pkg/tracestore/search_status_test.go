package tracestore

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TestStatusPseudoAttributes: Jaeger's error=true and otel.status_code match the span status,
// which translation turns into those tags but storage keeps as a status column.
func TestStatusPseudoAttributes(t *testing.T) {
	for _, tc := range []struct {
		code  ptrace.StatusCode
		attrs map[string]string
		want  bool
	}{
		{ptrace.StatusCodeError, map[string]string{"error": "true"}, true},
		{ptrace.StatusCodeError, map[string]string{"error": ""}, true},
		{ptrace.StatusCodeOk, map[string]string{"error": "true"}, false},
		{ptrace.StatusCodeUnset, map[string]string{"error": "true"}, false},
		{ptrace.StatusCodeError, map[string]string{"otel.status_code": "ERROR"}, true},
		{ptrace.StatusCodeOk, map[string]string{"otel.status_code": "ok"}, true},
		{ptrace.StatusCodeOk, map[string]string{"otel.status_code": "ERROR"}, false},
	} {
		found := map[string]bool{}
		matchStatusAttrs(int32(tc.code), tc.attrs, found)
		if got := len(found) == len(tc.attrs); got != tc.want {
			t.Errorf("status %v, attrs %v: matched=%v, want %v", tc.code, tc.attrs, got, tc.want)
		}
	}
}
