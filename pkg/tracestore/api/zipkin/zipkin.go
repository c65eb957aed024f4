// Package zipkin serves the Zipkin v2 query API (as specified by
// zipkin2-api.yaml) over a tracestore.Reader, so the Zipkin UI and Grafana's
// Zipkin datasource work against Vigil.
package zipkin

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/httpx"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const (
	defaultLimit    = 10
	defaultLookback = 24 * time.Hour // Zipkin's default (86400000 ms)
)

// API serves the Zipkin v2 query endpoints.
type API struct {
	reader      tracestore.Reader
	multiTenant bool
	logger      *slog.Logger
	now         func() time.Time
}

// New returns the Zipkin API over reader.
func New(reader tracestore.Reader, multiTenant bool, logger *slog.Logger) *API {
	return &API{reader: reader, multiTenant: multiTenant, logger: logger, now: time.Now}
}

// RegisterHTTP mounts the GET endpoints under prefix + "/api/v2/...":
// prefix "/zipkin" on the main port, "" on the Zipkin port (9411), where
// the lead also mounts the receiver's POST /api/v2/spans on the same router
// (routes here are GET-only, so the two do not collide).
func (a *API) RegisterHTTP(r *mux.Router, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	get := func(path string, h func(context.Context, http.ResponseWriter, *http.Request)) {
		r.Handle(prefix+"/api/v2"+path, a.wrap(h)).Methods(http.MethodGet)
	}
	get("/services", a.services)
	get("/spans", a.spans)
	get("/remoteServices", a.remoteServices)
	get("/traces", a.traces)
	get("/trace/{traceId}", a.trace)
	get("/traceMany", a.traceMany)
	get("/dependencies", a.dependencies)
	get("/autocompleteKeys", a.autocompleteKeys)
	get("/autocompleteValues", a.autocompleteValues)
}

func (a *API) wrap(h func(context.Context, http.ResponseWriter, *http.Request)) http.Handler {
	return httpx.WithTenant(a.multiTenant, h)
}

func (a *API) storeError(w http.ResponseWriter, err error) {
	httpx.PlainStoreError(w, a.logger, "zipkin", err)
}

func writeList(w http.ResponseWriter, list []string) {
	if list == nil {
		list = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, list)
}

func (a *API) services(ctx context.Context, w http.ResponseWriter, _ *http.Request) {
	svcs, err := a.reader.Services(ctx, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return
	}
	writeList(w, svcs)
}

func requireParam(w http.ResponseWriter, q url.Values, name string) (string, bool) {
	v := q.Get(name)
	if v == "" {
		http.Error(w, fmt.Sprintf("required parameter %s is missing", name), http.StatusBadRequest)
		return "", false
	}
	return v, true
}

func (a *API) spans(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	svc, ok := requireParam(w, r.URL.Query(), "serviceName")
	if !ok {
		return
	}
	ops, err := a.reader.Operations(ctx, svc, "", time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return
	}
	seen := map[string]bool{}
	var names []string
	for _, op := range ops {
		if !seen[op.Name] {
			seen[op.Name] = true
			names = append(names, op.Name)
		}
	}
	writeList(w, names)
}

// remoteServices lists the services svc calls, from the dependency links.
func (a *API) remoteServices(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	svc, ok := requireParam(w, r.URL.Query(), "serviceName")
	if !ok {
		return
	}
	end := a.now()
	links, err := a.reader.Dependencies(ctx, end.Add(-defaultLookback), end)
	if err != nil {
		a.storeError(w, err)
		return
	}
	set := map[string]bool{}
	for _, l := range links {
		if l.Parent == svc {
			set[l.Child] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	writeList(w, out)
}

// ParseAnnotationQuery reads Zipkin's annotationQuery: terms joined by
// " and ", each "key=value" (a tag must equal value) or "key" (a tag or
// annotation must be present). Vigil matches both against span and resource
// attributes; a bare word matches an attribute of that name.
func ParseAnnotationQuery(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, term := range strings.Split(s, " and ") {
		term = strings.TrimSpace(term)
		if term == "" {
			return nil, fmt.Errorf("annotationQuery %q has an empty term", s)
		}
		k, v, hasValue := strings.Cut(term, "=")
		k = strings.TrimSpace(k)
		if k == "" {
			return nil, fmt.Errorf("annotationQuery term %q has no key", term)
		}
		if hasValue {
			out[k] = v
		} else {
			out[k] = ""
		}
	}
	return out, nil
}

func micros(q url.Values, name string) (time.Duration, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s must be a non-negative number of microseconds, got %q", name, s)
	}
	return time.Duration(v) * time.Microsecond, nil
}

func (a *API) parseTracesQuery(q url.Values) (tracestore.SearchRequest, string, error) {
	req := tracestore.SearchRequest{Service: q.Get("serviceName"), Limit: defaultLimit}
	if op := q.Get("spanName"); op != "" && op != "all" { // old UIs send "all"
		req.Operation = op
	}
	var err error
	if req.Attributes, err = ParseAnnotationQuery(q.Get("annotationQuery")); err != nil {
		return req, "", err
	}
	if len(req.Attributes) == 0 {
		req.Attributes = nil
	}
	if req.MinDuration, err = micros(q, "minDuration"); err != nil {
		return req, "", err
	}
	if req.MaxDuration, err = micros(q, "maxDuration"); err != nil {
		return req, "", err
	}
	req.End = a.now()
	if s := q.Get("endTs"); s != "" {
		if req.End, err = httpx.EpochMillis(s); err != nil {
			return req, "", fmt.Errorf("endTs must be epoch milliseconds: %v", err)
		}
	}
	lookback := defaultLookback
	if s := q.Get("lookback"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return req, "", fmt.Errorf("lookback must be a non-negative number of milliseconds, got %q", s)
		}
		lookback = time.Duration(ms) * time.Millisecond
	}
	req.Start = req.End.Add(-lookback)
	if s := q.Get("limit"); s != "" {
		if req.Limit, err = httpx.PositiveInt(s); err != nil || req.Limit == 0 {
			return req, "", fmt.Errorf("limit must be a positive integer, got %q", s)
		}
	}
	if err := req.Validate(); err != nil {
		return req, "", err
	}
	return req, q.Get("remoteServiceName"), nil
}

func (a *API) zipkinTrace(td ptrace.Traces) ([]*zipkinmodel.SpanModel, error) {
	spans, err := translate.ZipkinSpansFromOTLP(td)
	if err != nil {
		return nil, err
	}
	// Deterministic order: by start time, then ID, as the Zipkin UI expects
	// to lay out the tree from the earliest span.
	sort.SliceStable(spans, func(i, j int) bool {
		if !spans[i].Timestamp.Equal(spans[j].Timestamp) {
			return spans[i].Timestamp.Before(spans[j].Timestamp)
		}
		return spans[i].ID < spans[j].ID
	})
	if spans == nil {
		spans = []*zipkinmodel.SpanModel{}
	}
	return spans, nil
}

func (a *API) traces(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	req, remote, err := a.parseTracesQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if remote != "" {
		// Over-fetch: the remote-service condition is applied here.
		req.Limit *= 4
	}
	sums, err := a.reader.Search(ctx, req)
	if err != nil {
		a.storeError(w, err)
		return
	}
	limit := req.Limit
	if remote != "" {
		limit /= 4
	}
	out := [][]*zipkinmodel.SpanModel{}
	for _, s := range sums {
		if len(out) >= limit {
			break
		}
		if remote != "" && !contains(s.Services, remote) {
			continue
		}
		td, found, err := a.reader.TraceByID(ctx, s.TraceID, req.Start, req.End)
		if err != nil {
			a.storeError(w, err)
			return
		}
		if !found {
			continue
		}
		spans, err := a.zipkinTrace(td)
		if err != nil {
			a.storeError(w, err)
			return
		}
		out = append(out, spans)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (a *API) trace(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	raw := mux.Vars(r)["traceId"]
	id, err := tracestore.ParseTraceID(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	td, found, err := a.reader.TraceByID(ctx, id, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return
	}
	if !found || td.SpanCount() == 0 {
		http.Error(w, fmt.Sprintf("trace %s not found", raw), http.StatusNotFound)
		return
	}
	spans, err := a.zipkinTrace(td)
	if err != nil {
		a.storeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, spans)
}

func (a *API) traceMany(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	raw, ok := requireParam(w, r.URL.Query(), "traceIds")
	if !ok {
		return
	}
	out := [][]*zipkinmodel.SpanModel{}
	for _, s := range strings.Split(raw, ",") {
		id, err := tracestore.ParseTraceID(strings.TrimSpace(s))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		td, found, err := a.reader.TraceByID(ctx, id, time.Time{}, time.Time{})
		if err != nil {
			a.storeError(w, err)
			return
		}
		if !found {
			continue
		}
		spans, err := a.zipkinTrace(td)
		if err != nil {
			a.storeError(w, err)
			return
		}
		out = append(out, spans)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// dependencyLink is Zipkin's DependencyLink; errorCount is omitted when
// zero, as Zipkin writes it.
type dependencyLink struct {
	Parent     string `json:"parent"`
	Child      string `json:"child"`
	CallCount  uint64 `json:"callCount"`
	ErrorCount uint64 `json:"errorCount,omitempty"`
}

func (a *API) dependencies(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s, ok := requireParam(w, q, "endTs")
	if !ok {
		return
	}
	end, err := httpx.EpochMillis(s)
	if err != nil {
		http.Error(w, fmt.Sprintf("endTs must be epoch milliseconds: %v", err), http.StatusBadRequest)
		return
	}
	lookback := defaultLookback
	if s := q.Get("lookback"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			http.Error(w, fmt.Sprintf("lookback must be a non-negative number of milliseconds, got %q", s), http.StatusBadRequest)
			return
		}
		lookback = time.Duration(ms) * time.Millisecond
	}
	links, err := a.reader.Dependencies(ctx, end.Add(-lookback), end)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := make([]dependencyLink, 0, len(links))
	for _, l := range links {
		out = append(out, dependencyLink{Parent: l.Parent, Child: l.Child, CallCount: l.CallCount, ErrorCount: l.ErrorCount})
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) autocompleteKeys(ctx context.Context, w http.ResponseWriter, _ *http.Request) {
	keys, err := a.reader.AttributeKeys(ctx, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return
	}
	writeList(w, keys)
}

func (a *API) autocompleteValues(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	key, ok := requireParam(w, r.URL.Query(), "key")
	if !ok {
		return
	}
	vals, err := a.reader.AttributeValues(ctx, key, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return
	}
	writeList(w, vals)
}
