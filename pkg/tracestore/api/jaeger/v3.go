package jaeger

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"github.com/vigil-obs/vigil/pkg/tracestore/api/internal/httpx"
	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// v3 defaults: jaeger-ui always sends a time range and a depth; these only
// keep a hand-written query bounded.
const (
	v3DefaultSearchDepth = 20
	v3DefaultLookback    = time.Hour
)

// v3Error is the body of api_v3 errors, as Jaeger's HTTP gateway writes it.
type v3Error struct {
	Error v3ErrorDetails `json:"error"`
}

type v3ErrorDetails struct {
	HTTPCode int    `json:"httpCode"`
	Message  string `json:"message"`
}

func writeV3Error(w http.ResponseWriter, code int, msg string) {
	httpx.WriteJSON(w, code, v3Error{Error: v3ErrorDetails{HTTPCode: code, Message: msg}})
}

func (a *API) writeV3StoreError(w http.ResponseWriter, err error) {
	if isInvalid(err) {
		writeV3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	a.logger.Error("jaeger api_v3 query failed", "err", err)
	writeV3Error(w, http.StatusInternalServerError, err.Error())
}

func (a *API) v3Services(ctx context.Context, w http.ResponseWriter, _ *http.Request) {
	svcs, err := a.reader.Services(ctx, time.Time{}, time.Time{})
	if err != nil {
		a.writeV3StoreError(w, err)
		return
	}
	if svcs == nil {
		svcs = []string{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string][]string{"services": svcs})
}

func (a *API) v3Operations(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	ops, code, err := a.listOperations(ctx, r)
	switch {
	case code == http.StatusInternalServerError:
		a.writeV3StoreError(w, err)
	case err != nil:
		writeV3Error(w, code, err.Error())
	default:
		httpx.WriteJSON(w, http.StatusOK, map[string][]operation{"operations": ops})
	}
}

// param returns the first non-empty value among the names: api_v3 takes
// camelCase (what the OpenAPI spec and jaeger-ui use) and snake_case (what
// the proto field names and older clients use).
func param(q url.Values, names ...string) string {
	for _, n := range names {
		if v := q.Get(n); v != "" {
			return v
		}
	}
	return ""
}

func parseRFC3339(s, name string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: cannot parse %s %q as RFC 3339 time", tracestore.ErrInvalidRequest, name, s)
	}
	return t, nil
}

// parseV3Query reads api_v3 TraceQueryParameters from the URL.
func (a *API) parseV3Query(q url.Values) (tracestore.SearchRequest, error) {
	req := tracestore.SearchRequest{
		Service:   param(q, "query.serviceName", "query.service_name"),
		Operation: param(q, "query.operationName", "query.operation_name"),
		Limit:     v3DefaultSearchDepth,
	}
	var err error
	req.End = a.now()
	if s := param(q, "query.startTimeMax", "query.start_time_max"); s != "" {
		if req.End, err = parseRFC3339(s, "query.startTimeMax"); err != nil {
			return req, err
		}
	}
	req.Start = req.End.Add(-v3DefaultLookback)
	if s := param(q, "query.startTimeMin", "query.start_time_min"); s != "" {
		if req.Start, err = parseRFC3339(s, "query.startTimeMin"); err != nil {
			return req, err
		}
	}
	for _, d := range []struct {
		names []string
		dst   *time.Duration
	}{
		{[]string{"query.durationMin", "query.duration_min"}, &req.MinDuration},
		{[]string{"query.durationMax", "query.duration_max"}, &req.MaxDuration},
	} {
		if s := param(q, d.names...); s != "" {
			if *d.dst, err = time.ParseDuration(s); err != nil {
				return req, fmt.Errorf("%w: cannot parse %s %q as a duration", tracestore.ErrInvalidRequest, d.names[0], s)
			}
		}
	}
	if s := param(q, "query.searchDepth", "query.search_depth", "query.numTraces", "query.num_traces"); s != "" {
		if req.Limit, err = httpx.PositiveInt(s); err != nil || req.Limit == 0 {
			return req, fmt.Errorf("%w: cannot parse query.searchDepth %q: want a positive integer", tracestore.ErrInvalidRequest, s)
		}
	}
	if s := param(q, "query.attributes"); s != "" {
		var attrs map[string]string
		if err := json.Unmarshal([]byte(s), &attrs); err != nil {
			return req, fmt.Errorf("%w: query.attributes must be a JSON object of strings: %v", tracestore.ErrInvalidRequest, err)
		}
		if len(attrs) > 0 {
			req.Attributes = attrs
		}
	}
	if s := param(q, "query.filter"); s != "" {
		attrs, err := ParseFilter(s)
		if err != nil {
			return req, fmt.Errorf("%w: %v", tracestore.ErrInvalidRequest, err)
		}
		for k, v := range attrs {
			if old, ok := req.Attributes[k]; ok && old != v && v != "" {
				return req, fmt.Errorf("%w: query.filter and query.attributes disagree on %q", tracestore.ErrInvalidRequest, k)
			}
			if req.Attributes == nil {
				req.Attributes = map[string]string{}
			}
			if _, ok := req.Attributes[k]; !ok || v != "" {
				req.Attributes[k] = v
			}
		}
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

func (a *API) v3FindTraces(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	req, err := a.parseV3Query(r.URL.Query())
	if err != nil {
		writeV3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	sums, err := a.reader.Search(ctx, req)
	if err != nil {
		a.writeV3StoreError(w, err)
		return
	}
	all := ptrace.NewTraces()
	for _, s := range sums {
		td, found, err := a.reader.TraceByID(ctx, s.TraceID, req.Start, req.End)
		if err != nil {
			a.writeV3StoreError(w, err)
			return
		}
		if found {
			td.ResourceSpans().MoveAndAppendTo(all.ResourceSpans())
		}
	}
	a.writeV3Traces(w, all)
}

func (a *API) writeV3Traces(w http.ResponseWriter, td ptrace.Traces) {
	raw, err := translate.OTLPJSON(td)
	if err != nil {
		writeV3Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	b, err := translate.Envelope(raw)
	if err != nil {
		writeV3Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	httpx.WriteRawJSON(w, http.StatusOK, b)
}

func (a *API) v3GetTrace(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	id, err := tracestore.ParseTraceID(mux.Vars(r)["traceID"])
	if err != nil {
		writeV3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	var start, end time.Time
	if s := param(q, "startTime", "start_time"); s != "" {
		if start, err = parseRFC3339(s, "startTime"); err != nil {
			writeV3Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if s := param(q, "endTime", "end_time"); s != "" {
		if end, err = parseRFC3339(s, "endTime"); err != nil {
			writeV3Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	td, found, err := a.reader.TraceByID(ctx, id, start, end)
	if err != nil {
		a.writeV3StoreError(w, err)
		return
	}
	if !found || td.SpanCount() == 0 {
		writeV3Error(w, http.StatusNotFound, "trace not found")
		return
	}
	a.writeV3Traces(w, td)
}

// v3TraceSummary is api_v3 TraceSummary in its JSON form: int64 times as
// decimal strings, as protobuf JSON encodes them.
type v3TraceSummary struct {
	TraceID              string             `json:"traceId"`
	RootServiceName      string             `json:"rootServiceName,omitempty"`
	RootOperationName    string             `json:"rootOperationName,omitempty"`
	MinStartTimeUnixNano string             `json:"minStartTimeUnixNano"`
	MaxEndTimeUnixNano   string             `json:"maxEndTimeUnixNano"`
	SpanCount            int                `json:"spanCount"`
	ErrorSpanCount       int                `json:"errorSpanCount,omitempty"`
	Services             []v3ServiceSummary `json:"services"`
}

type v3ServiceSummary struct {
	Name           string `json:"name"`
	SpanCount      int    `json:"spanCount"`
	ErrorSpanCount int    `json:"errorSpanCount,omitempty"`
}

func (a *API) v3TraceSummaries(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	req, err := a.parseV3Query(r.URL.Query())
	if err != nil {
		writeV3Error(w, http.StatusBadRequest, err.Error())
		return
	}
	sums, err := a.reader.Search(ctx, req)
	if err != nil {
		a.writeV3StoreError(w, err)
		return
	}
	out := make([]v3TraceSummary, 0, len(sums))
	for _, s := range sums {
		ts := v3TraceSummary{
			TraceID:              s.TraceID.String(),
			RootServiceName:      s.RootService,
			RootOperationName:    s.RootOperation,
			MinStartTimeUnixNano: strconv.FormatInt(s.Start.UnixNano(), 10),
			MaxEndTimeUnixNano:   strconv.FormatInt(s.Start.Add(s.Duration).UnixNano(), 10),
			SpanCount:            s.SpanCount,
			ErrorSpanCount:       s.ErrorCount,
		}
		// Per-service counts are not part of the stored summary; count
		// them from the trace, which the result page is about to open anyway.
		td, found, err := a.reader.TraceByID(ctx, s.TraceID, req.Start, req.End)
		if err != nil {
			a.writeV3StoreError(w, err)
			return
		}
		if found {
			ts.Services = serviceSummaries(td)
		} else {
			for _, name := range s.Services {
				ts.Services = append(ts.Services, v3ServiceSummary{Name: name})
			}
		}
		out = append(out, ts)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string][]v3TraceSummary{"summaries": out})
}

func serviceSummaries(td ptrace.Traces) []v3ServiceSummary {
	counts := map[string]*v3ServiceSummary{}
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		name := ""
		if v, ok := rs.Resource().Attributes().Get("service.name"); ok {
			name = v.AsString()
		}
		c, ok := counts[name]
		if !ok {
			c = &v3ServiceSummary{Name: name}
			counts[name] = c
		}
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			spans := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				c.SpanCount++
				if spans.At(k).Status().Code() == ptrace.StatusCodeError {
					c.ErrorSpanCount++
				}
			}
		}
	}
	out := make([]v3ServiceSummary, 0, len(counts))
	for _, c := range counts {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

type v3Dependency struct {
	Parent    string `json:"parent"`
	Child     string `json:"child"`
	CallCount string `json:"callCount"`
}

func (a *API) v3Dependencies(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	end := a.now()
	var err error
	if s := param(q, "endTime", "end_time"); s != "" {
		if end, err = parseRFC3339(s, "endTime"); err != nil {
			writeV3Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	start := end.Add(-defaultDependenciesLookback)
	if s := param(q, "startTime", "start_time"); s != "" {
		if start, err = parseRFC3339(s, "startTime"); err != nil {
			writeV3Error(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	links, err := a.reader.Dependencies(ctx, start, end)
	if err != nil {
		a.writeV3StoreError(w, err)
		return
	}
	out := make([]v3Dependency, 0, len(links))
	for _, l := range links {
		out = append(out, v3Dependency{Parent: l.Parent, Child: l.Child, CallCount: strconv.FormatUint(l.CallCount, 10)})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string][]v3Dependency{"dependencies": out})
}
