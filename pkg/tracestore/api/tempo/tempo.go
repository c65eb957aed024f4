// Package tempo serves the parts of Grafana Tempo's HTTP API that Grafana's
// Tempo datasource needs to open traces by ID, plus basic tag search, over
// a tracestore.Reader. Tempo's protobuf messages are wire-compatible with
// OTLP (tempopb.Trace ≡ TracesData), so no Tempo code is needed.
package tempo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/httpx"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	ctProtobuf = "application/protobuf"
	// defaultSearchLimit is Tempo's default number of search results.
	defaultSearchLimit = 20
	defaultLookback    = time.Hour
)

// API serves the Tempo endpoints.
type API struct {
	reader      tracestore.Reader
	multiTenant bool
	logger      *slog.Logger
	now         func() time.Time
}

// New returns the Tempo API over reader.
func New(reader tracestore.Reader, multiTenant bool, logger *slog.Logger) *API {
	return &API{reader: reader, multiTenant: multiTenant, logger: logger, now: time.Now}
}

// RegisterHTTP mounts the API under prefix (Vigil uses "/tempo", so a
// Grafana Tempo datasource points at http://host:9009/tempo).
func (a *API) RegisterHTTP(r *mux.Router, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	get := func(path string, h func(context.Context, http.ResponseWriter, *http.Request)) {
		r.Handle(prefix+path, a.wrap(h)).Methods(http.MethodGet)
	}
	r.Handle(prefix+"/api/echo", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("echo"))
	})).Methods(http.MethodGet)
	get("/api/traces/{traceID}", a.traceV1)
	get("/api/v2/traces/{traceID}", a.traceV2)
	get("/api/search", a.search)
	get("/api/search/tags", a.tags)
	get("/api/v2/search/tags", a.tagsV2)
	get("/api/search/tag/{tag}/values", a.tagValues)
	get("/api/v2/search/tag/{tag}/values", a.tagValuesV2)
}

func (a *API) wrap(h func(context.Context, http.ResponseWriter, *http.Request)) http.Handler {
	return httpx.WithTenant(a.multiTenant, h)
}

func (a *API) storeError(w http.ResponseWriter, err error) {
	httpx.PlainStoreError(w, a.logger, "tempo", err)
}

// wantsProtobuf reports whether the client asked for protobuf, as Grafana's
// Tempo datasource does.
func wantsProtobuf(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && (mt == ctProtobuf || mt == "application/x-protobuf") {
			return true
		}
	}
	return false
}

// seconds parses Tempo's start/end parameters (Unix seconds).
func seconds(s, name string) (time.Time, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return time.Time{}, fmt.Errorf("invalid %s %q: want Unix seconds", name, s)
	}
	return time.Unix(v, 0), nil
}

func (a *API) fetch(ctx context.Context, w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	id, err := tracestore.ParseTraceID(mux.Vars(r)["traceID"])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	var start, end time.Time
	q := r.URL.Query()
	if s := q.Get("start"); s != "" {
		if start, err = seconds(s, "start"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, false
		}
	}
	if s := q.Get("end"); s != "" {
		if end, err = seconds(s, "end"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, false
		}
	}
	td, found, err := a.reader.TraceByID(ctx, id, start, end)
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	if !found || td.SpanCount() == 0 {
		http.Error(w, "trace not found", http.StatusNotFound)
		return nil, false
	}
	if wantsProtobuf(r) {
		b, err := translate.OTLPProto(td)
		if err != nil {
			a.storeError(w, err)
			return nil, false
		}
		return b, true
	}
	b, err := translate.OTLPJSON(td)
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	return b, true
}

// traceV1 answers /api/traces/{id}: tempopb.Trace, whose protobuf is the
// OTLP TracesData wire format and whose JSON names the list "batches".
func (a *API) traceV1(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	b, ok := a.fetch(ctx, w, r)
	if !ok {
		return
	}
	if wantsProtobuf(r) {
		w.Header().Set("Content-Type", ctProtobuf)
		_, _ = w.Write(b)
		return
	}
	var doc struct {
		ResourceSpans json.RawMessage `json:"resourceSpans"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		a.storeError(w, fmt.Errorf("re-encoding trace: %w", err))
		return
	}
	if doc.ResourceSpans == nil {
		doc.ResourceSpans = json.RawMessage("[]")
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{"batches": doc.ResourceSpans})
}

// traceV2 answers /api/v2/traces/{id}: tempopb.TraceByIDResponse, i.e.
// the trace as field 1.
func (a *API) traceV2(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	b, ok := a.fetch(ctx, w, r)
	if !ok {
		return
	}
	if wantsProtobuf(r) {
		out := protowire.AppendTag(nil, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, b)
		w.Header().Set("Content-Type", ctProtobuf)
		_, _ = w.Write(out)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{"trace": b})
}

// ParseLogfmtTags reads Tempo's `tags` search parameter: space-separated
// key=value pairs, values optionally double-quoted.
func ParseLogfmtTags(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	for i < len(s) {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		if i >= len(s) {
			break
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq <= 0 {
			return nil, fmt.Errorf("invalid tags %q: want key=value pairs separated by spaces", s)
		}
		key := s[i : i+eq]
		if strings.ContainsAny(key, " \"") {
			return nil, fmt.Errorf("invalid tag key %q", key)
		}
		i += eq + 1
		var val string
		if i < len(s) && s[i] == '"' {
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("invalid tags %q: unterminated quote", s)
			}
			val = s[i+1 : i+1+end]
			i += end + 2
			if i < len(s) && s[i] != ' ' {
				return nil, fmt.Errorf("invalid tags %q: text after closing quote", s)
			}
		} else {
			end := strings.IndexByte(s[i:], ' ')
			if end < 0 {
				end = len(s) - i
			}
			val = s[i : i+end]
			i += end
		}
		out[key] = val
	}
	return out, nil
}

type searchTrace struct {
	TraceID           string `json:"traceID"`
	RootServiceName   string `json:"rootServiceName"`
	RootTraceName     string `json:"rootTraceName"`
	StartTimeUnixNano string `json:"startTimeUnixNano"`
	DurationMs        int64  `json:"durationMs"`
}

func (a *API) search(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := tracestore.SearchRequest{Limit: defaultSearchLimit}
	if s := strings.TrimSpace(q.Get("q")); s != "" {
		if err := ParseTraceQL(s, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	attrs, err := ParseLogfmtTags(q.Get("tags"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// service.name is a resource attribute the store indexes as the
	// service; route it there so the search can use the index.
	if svc, ok := attrs["service.name"]; ok {
		req.Service = svc
		delete(attrs, "service.name")
	}
	if name, ok := attrs["name"]; ok {
		req.Operation = name
		delete(attrs, "name")
	}
	for k, v := range attrs {
		if req.Attributes == nil {
			req.Attributes = map[string]string{}
		}
		req.Attributes[k] = v
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"minDuration", &req.MinDuration}, {"maxDuration", &req.MaxDuration}} {
		if s := q.Get(d.name); s != "" {
			if *d.dst, err = time.ParseDuration(s); err != nil {
				http.Error(w, fmt.Sprintf("invalid %s %q: %v", d.name, s, err), http.StatusBadRequest)
				return
			}
		}
	}
	req.End = a.now()
	if s := q.Get("end"); s != "" {
		if req.End, err = seconds(s, "end"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	req.Start = req.End.Add(-defaultLookback)
	if s := q.Get("start"); s != "" {
		if req.Start, err = seconds(s, "start"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		if req.Limit, err = httpx.PositiveInt(s); err != nil || req.Limit == 0 {
			http.Error(w, fmt.Sprintf("invalid limit %q: want a positive integer", s), http.StatusBadRequest)
			return
		}
	}
	if err := req.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sums, err := a.reader.Search(ctx, req)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := make([]searchTrace, 0, len(sums))
	for _, s := range sums {
		out = append(out, searchTrace{
			TraceID:           s.TraceID.String(),
			RootServiceName:   s.RootService,
			RootTraceName:     s.RootOperation,
			StartTimeUnixNano: strconv.FormatInt(s.Start.UnixNano(), 10),
			DurationMs:        s.Duration.Milliseconds(),
		})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"traces": out, "metrics": map[string]any{}})
}

func (a *API) tagNames(ctx context.Context, w http.ResponseWriter) ([]string, bool) {
	keys, err := a.reader.AttributeKeys(ctx, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	if keys == nil {
		keys = []string{}
	}
	return keys, true
}

func (a *API) tags(ctx context.Context, w http.ResponseWriter, _ *http.Request) {
	if keys, ok := a.tagNames(ctx, w); ok {
		httpx.WriteJSON(w, http.StatusOK, map[string][]string{"tagNames": keys})
	}
}

type scope struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

func (a *API) tagsV2(ctx context.Context, w http.ResponseWriter, _ *http.Request) {
	if keys, ok := a.tagNames(ctx, w); ok {
		// The store does not tell span from resource attributes apart in
		// its key index, so everything is offered in the span scope.
		httpx.WriteJSON(w, http.StatusOK, map[string][]scope{"scopes": {{Name: "span", Tags: keys}}})
	}
}

func (a *API) values(ctx context.Context, w http.ResponseWriter, r *http.Request) ([]string, bool) {
	tag := mux.Vars(r)["tag"]
	// TraceQL-style names (span.x, resource.x, .x) name the attribute x.
	for _, p := range []string{"span.", "resource.", "."} {
		if strings.HasPrefix(tag, p) {
			tag = strings.TrimPrefix(tag, p)
			break
		}
	}
	vals, err := a.reader.AttributeValues(ctx, tag, time.Time{}, time.Time{})
	if err != nil {
		a.storeError(w, err)
		return nil, false
	}
	sort.Strings(vals)
	if vals == nil {
		vals = []string{}
	}
	return vals, true
}

func (a *API) tagValues(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if vals, ok := a.values(ctx, w, r); ok {
		httpx.WriteJSON(w, http.StatusOK, map[string][]string{"tagValues": vals})
	}
}

type typedValue struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (a *API) tagValuesV2(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	vals, ok := a.values(ctx, w, r)
	if !ok {
		return
	}
	out := make([]typedValue, 0, len(vals))
	for _, v := range vals {
		out = append(out, typedValue{Type: "string", Value: v})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string][]typedValue{"tagValues": out})
}
