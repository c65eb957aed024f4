// Package jaeger serves the Jaeger query HTTP APIs (v1, which Grafana's
// Jaeger datasource and jaeger-ui use, and api_v3) over a tracestore.Reader.
// Responses reproduce Jaeger's own JSON byte shapes: the v1 envelope
// {"data","total","limit","offset","errors"} and the UI span model.
package jaeger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/httpx"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const (
	// defaultLimit is Jaeger's default number of search results.
	defaultLimit = 100
	// defaultLookback applies when a search names no start time.
	defaultLookback = time.Hour
	// defaultDependenciesLookback is Jaeger's default for /api/dependencies.
	defaultDependenciesLookback = 24 * time.Hour
)

// API serves the Jaeger query endpoints.
type API struct {
	reader      tracestore.Reader
	multiTenant bool
	logger      *slog.Logger
	now         func() time.Time
}

// New returns the Jaeger API over reader.
func New(reader tracestore.Reader, multiTenant bool, logger *slog.Logger) *API {
	return &API{reader: reader, multiTenant: multiTenant, logger: logger, now: time.Now}
}

// RegisterHTTP mounts the API under prefix (Vigil uses "/jaeger", so a
// Grafana Jaeger datasource points at http://host:9009/jaeger).
func (a *API) RegisterHTTP(r *mux.Router, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	get := func(path string, h func(context.Context, http.ResponseWriter, *http.Request)) {
		r.Handle(prefix+path, a.wrap(h)).Methods(http.MethodGet)
	}
	get("/api/services", a.services)
	get("/api/services/{service}/operations", a.serviceOperations)
	get("/api/operations", a.operations)
	get("/api/traces", a.search)
	get("/api/traces/{traceID}", a.traceByID)
	get("/api/dependencies", a.dependencies)

	get("/api/v3/services", a.v3Services)
	get("/api/v3/operations", a.v3Operations)
	get("/api/v3/traces", a.v3FindTraces)
	get("/api/v3/traces/{traceID}", a.v3GetTrace)
	get("/api/v3/trace-summaries", a.v3TraceSummaries)
	get("/api/v3/dependencies", a.v3Dependencies)
	r.Handle(prefix+"/api/v3/capabilities", http.HandlerFunc(a.capabilities)).Methods(http.MethodGet)
}

// Handler returns the API as a handler with paths rooted at "/".
func (a *API) Handler() http.Handler {
	r := mux.NewRouter()
	a.RegisterHTTP(r, "")
	return r
}

func (a *API) wrap(h func(context.Context, http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, code, err := httpx.Tenant(r, a.multiTenant)
		if err != nil {
			if strings.Contains(r.URL.Path, "/api/v3/") {
				writeV3Error(w, code, err.Error())
				return
			}
			writeError(w, code, err.Error())
			return
		}
		h(ctx, w, r)
	})
}

// structuredError is an element of the v1 envelope's "errors".
type structuredError struct {
	Code    int    `json:"code,omitempty"`
	Msg     string `json:"msg"`
	TraceID string `json:"traceID,omitempty"`
}

// response is the v1 envelope. Errors is null, not [], when empty, as
// Jaeger answers.
type response struct {
	Data   any               `json:"data"`
	Total  int               `json:"total"`
	Limit  int               `json:"limit"`
	Offset int               `json:"offset"`
	Errors []structuredError `json:"errors"`
}

func writeData(w http.ResponseWriter, data any, total int) {
	httpx.WriteJSON(w, http.StatusOK, response{Data: data, Total: total})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	httpx.WriteJSON(w, code, response{Errors: []structuredError{{Code: code, Msg: msg}}})
}

// writeStoreError maps Reader errors: contradictory parameters are the
// client's fault, anything else is ours.
func (a *API) writeStoreError(w http.ResponseWriter, err error) {
	if isInvalid(err) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	a.logger.Error("jaeger query failed", "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

func isInvalid(err error) bool {
	return errors.Is(err, tracestore.ErrInvalidRequest) || errors.Is(err, tracestore.ErrInvalidTraceID)
}

func (a *API) services(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	svcs, err := a.reader.Services(ctx, time.Time{}, time.Time{})
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	writeData(w, svcs, len(svcs))
}

func (a *API) serviceOperations(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	svc := mux.Vars(r)["service"]
	ops, err := a.reader.Operations(ctx, svc, "", time.Time{}, time.Time{})
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	// The legacy endpoint lists names only, each once.
	names := []string{}
	seen := map[string]bool{}
	for _, op := range ops {
		if !seen[op.Name] {
			seen[op.Name] = true
			names = append(names, op.Name)
		}
	}
	writeData(w, names, len(names))
}

type operation struct {
	Name     string `json:"name"`
	SpanKind string `json:"spanKind"`
}

// spanKindParam normalises a spanKind parameter; Jaeger accepts the
// lower-case OpenTelemetry names.
func spanKindParam(s string) (string, error) {
	k := strings.ToLower(strings.TrimSpace(s))
	switch k {
	case "", tracestore.SpanKindServer, tracestore.SpanKindClient, tracestore.SpanKindProducer,
		tracestore.SpanKindConsumer, tracestore.SpanKindInternal, tracestore.SpanKindUnspecified:
		return k, nil
	}
	return "", fmt.Errorf("unsupported span kind %q: want server, client, producer, consumer, internal or unspecified", s)
}

// opKind renders a stored kind for the API: Jaeger reports unspecified as "".
func opKind(k string) string {
	if k == tracestore.SpanKindUnspecified {
		return ""
	}
	return k
}

func (a *API) operations(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	ops, code, err := a.listOperations(ctx, r)
	switch {
	case code == http.StatusInternalServerError:
		a.writeStoreError(w, err)
	case err != nil:
		writeError(w, code, err.Error())
	default:
		writeData(w, ops, len(ops))
	}
}

// listOperations answers the v1 and api_v3 operations endpoints, which take the same
// parameters and differ only in their envelope. A non-nil error comes with its status code.
func (a *API) listOperations(ctx context.Context, r *http.Request) ([]operation, int, error) {
	q := r.URL.Query()
	svc := q.Get("service")
	if svc == "" {
		return nil, http.StatusBadRequest, errors.New("parameter 'service' is required")
	}
	kind, err := spanKindParam(q.Get("spanKind"))
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	ops, err := a.reader.Operations(ctx, svc, kind, time.Time{}, time.Time{})
	if err != nil {
		if isInvalid(err) {
			return nil, http.StatusBadRequest, err
		}
		return nil, http.StatusInternalServerError, err
	}
	out := make([]operation, 0, len(ops))
	for _, op := range ops {
		out = append(out, operation{Name: op.Name, SpanKind: opKind(op.SpanKind)})
	}
	return out, http.StatusOK, nil
}

// ParseTags reads Jaeger's tag filters: any number of `tags` parameters
// holding a JSON object of string values, and legacy `tag=key:value`
// parameters. Non-string JSON values are matched by their text form.
func ParseTags(q url.Values) (map[string]string, error) {
	out := map[string]string{}
	for _, raw := range q["tags"] {
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			return nil, fmt.Errorf("malformed 'tags' parameter, expecting a JSON object of key/value pairs: %v", err)
		}
		for k, v := range m {
			switch x := v.(type) {
			case string:
				out[k] = x
			case bool:
				out[k] = strconv.FormatBool(x)
			case float64:
				out[k] = strconv.FormatFloat(x, 'f', -1, 64)
			default:
				return nil, fmt.Errorf("malformed 'tags' parameter: value of %q must be a string, number or bool", k)
			}
		}
	}
	for _, raw := range q["tag"] {
		k, v, ok := strings.Cut(raw, ":")
		if !ok || k == "" {
			return nil, fmt.Errorf("malformed 'tag' parameter %q, expecting key:value", raw)
		}
		out[k] = v
	}
	return out, nil
}

func parseDuration(q url.Values, name string) (time.Duration, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %s: %v", name, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("cannot parse %s: negative duration %s", name, s)
	}
	return d, nil
}

// parseSearch turns v1 query parameters into a SearchRequest.
func (a *API) parseSearch(q url.Values) (tracestore.SearchRequest, error) {
	req := tracestore.SearchRequest{
		Service:   q.Get("service"),
		Operation: q.Get("operation"),
		Limit:     defaultLimit,
	}
	var err error
	if req.Attributes, err = ParseTags(q); err != nil {
		return req, err
	}
	if len(req.Attributes) == 0 {
		req.Attributes = nil
	}
	if req.MinDuration, err = parseDuration(q, "minDuration"); err != nil {
		return req, err
	}
	if req.MaxDuration, err = parseDuration(q, "maxDuration"); err != nil {
		return req, err
	}
	req.End = a.now()
	if s := q.Get("end"); s != "" {
		if req.End, err = httpx.EpochMicros(s); err != nil {
			return req, fmt.Errorf("cannot parse end: %v", err)
		}
	}
	req.Start = req.End.Add(-defaultLookback)
	if s := q.Get("start"); s != "" {
		if req.Start, err = httpx.EpochMicros(s); err != nil {
			return req, fmt.Errorf("cannot parse start: %v", err)
		}
	}
	if s := q.Get("limit"); s != "" {
		if req.Limit, err = httpx.PositiveInt(s); err != nil {
			return req, fmt.Errorf("cannot parse limit: %v", err)
		}
		if req.Limit == 0 {
			req.Limit = defaultLimit
		}
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

func (a *API) search(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if ids := q["traceID"]; len(ids) > 0 {
		a.multiGet(ctx, w, ids)
		return
	}
	req, err := a.parseSearch(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sums, err := a.reader.Search(ctx, req)
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	traces := make([]translate.JaegerTrace, 0, len(sums))
	for _, s := range sums {
		td, found, err := a.reader.TraceByID(ctx, s.TraceID, req.Start, req.End)
		if err != nil {
			a.writeStoreError(w, err)
			return
		}
		if !found {
			continue // expired between search and fetch
		}
		traces = append(traces, toJaeger(td)...)
	}
	writeData(w, traces, len(traces))
}

func toJaeger(td ptrace.Traces) []translate.JaegerTrace {
	traces := translate.JaegerTracesFromOTLP(td)
	for i := range traces {
		translate.SortSpans(&traces[i])
	}
	return traces
}

func (a *API) multiGet(ctx context.Context, w http.ResponseWriter, ids []string) {
	traces := []translate.JaegerTrace{}
	var errs []structuredError
	for _, raw := range ids {
		id, err := tracestore.ParseTraceID(raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		td, found, err := a.reader.TraceByID(ctx, id, time.Time{}, time.Time{})
		if err != nil {
			a.writeStoreError(w, err)
			return
		}
		if !found {
			errs = append(errs, structuredError{Code: http.StatusNotFound, Msg: "trace not found", TraceID: raw})
			continue
		}
		traces = append(traces, toJaeger(td)...)
	}
	httpx.WriteJSON(w, http.StatusOK, response{Data: traces, Total: len(traces), Errors: errs})
}

// timeRange reads optional start/end (µs, or ms from Grafana).
func timeRange(q url.Values) (time.Time, time.Time, error) {
	var start, end time.Time
	var err error
	if s := q.Get("start"); s != "" {
		if start, err = httpx.EpochMicros(s); err != nil {
			return start, end, fmt.Errorf("cannot parse start: %v", err)
		}
	}
	if s := q.Get("end"); s != "" {
		if end, err = httpx.EpochMicros(s); err != nil {
			return start, end, fmt.Errorf("cannot parse end: %v", err)
		}
	}
	if !start.IsZero() && !end.IsZero() && end.Before(start) {
		return start, end, fmt.Errorf("end %s is before start %s", end, start)
	}
	return start, end, nil
}

func (a *API) traceByID(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	id, err := tracestore.ParseTraceID(mux.Vars(r)["traceID"])
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	start, end, err := timeRange(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	td, found, err := a.reader.TraceByID(ctx, id, start, end)
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	if !found || td.SpanCount() == 0 {
		writeError(w, http.StatusNotFound, "trace not found")
		return
	}
	traces := toJaeger(td)
	writeData(w, traces, len(traces))
}

func (a *API) dependencies(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	end := a.now()
	var err error
	if s := q.Get("endTs"); s != "" {
		if end, err = httpx.EpochMillis(s); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cannot parse endTs: %v", err))
			return
		}
	}
	lookback := defaultDependenciesLookback
	if s := q.Get("lookback"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("cannot parse lookback: want milliseconds, got %q", s))
			return
		}
		lookback = time.Duration(ms) * time.Millisecond
	}
	links, err := a.reader.Dependencies(ctx, end.Add(-lookback), end)
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	out := make([]translate.JaegerDependencyLink, 0, len(links))
	for _, l := range links {
		out = append(out, translate.JaegerDependencyLink{Parent: l.Parent, Child: l.Child, CallCount: l.CallCount})
	}
	writeData(w, out, len(out))
}
