// Package httpx holds what the Jaeger, Zipkin and Tempo query APIs share:
// tenant resolution and parameter parsing.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/grafana/dskit/user"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// Tenant resolves the request's tenant and returns a context carrying it,
// or the HTTP status and message to answer with.
func Tenant(r *http.Request, multiTenant bool) (context.Context, int, error) {
	id, err := tenant.FromHTTP(r, multiTenant)
	if err != nil {
		if errors.Is(err, tenant.ErrMissing) {
			return nil, http.StatusUnauthorized, err
		}
		return nil, http.StatusBadRequest, err
	}
	return user.InjectOrgID(r.Context(), id), 0, nil
}

// WriteJSON writes v as JSON with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, fmt.Sprintf("encoding response: %v", err), http.StatusInternalServerError)
		return
	}
	WriteRawJSON(w, code, b)
}

// WriteRawJSON writes already encoded JSON.
func WriteRawJSON(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// EpochMicros parses a Unix timestamp in microseconds. Values too small to
// be microseconds of this era are taken as milliseconds, because Grafana
// sends milliseconds to some endpoints that Jaeger defines in µs.
func EpochMicros(s string) (time.Time, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("not an integer: %q", s)
	}
	if v < 0 {
		return time.Time{}, fmt.Errorf("negative timestamp %d", v)
	}
	// 1e14 µs is 1973; 1e14 ms is year 5138. Anything below is ms.
	if v < 1e14 {
		return time.UnixMilli(v), nil
	}
	return time.UnixMicro(v), nil
}

// EpochMillis parses a Unix timestamp in milliseconds.
func EpochMillis(s string) (time.Time, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("not an integer: %q", s)
	}
	if v < 0 {
		return time.Time{}, fmt.Errorf("negative timestamp %d", v)
	}
	return time.UnixMilli(v), nil
}

// PositiveInt parses a limit-like parameter.
func PositiveInt(s string) (int, error) {
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("want a non-negative integer, got %q", s)
	}
	return v, nil
}

// WithTenant resolves the tenant before h runs; a missing or invalid tenant is answered in
// plain text (401 or 400), as the Zipkin and Tempo APIs answer errors.
func WithTenant(multiTenant bool, h func(context.Context, http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, code, err := Tenant(r, multiTenant)
		if err != nil {
			http.Error(w, err.Error(), code)
			return
		}
		h(ctx, w, r)
	})
}

// PlainStoreError answers a store failure in plain text: 400 when the request was invalid,
// 500 (logged with api's name) otherwise.
func PlainStoreError(w http.ResponseWriter, logger *slog.Logger, api string, err error) {
	if errors.Is(err, tracestore.ErrInvalidRequest) || errors.Is(err, tracestore.ErrInvalidTraceID) {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	logger.Error(api+" query failed", "err", err)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}
