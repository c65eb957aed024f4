package querier

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/user"
	"github.com/grafana/regexp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/route"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/notifications"
	v1 "github.com/prometheus/prometheus/web/api/v1"
)

// PrometheusCompatVersion is the Prometheus release whose API Vigil implements (the
// vendored prometheus v0.310 module is Prometheus 3.10). Grafana picks features from the
// version in status/buildinfo.
const PrometheusCompatVersion = "3.10.0"

// TenantFromHTTP resolves the tenant of an HTTP request.
type TenantFromHTTP func(r *http.Request) (string, error)

// DefaultTenantFromHTTP reads X-Scope-OrgID, then THANOS-TENANT, and falls back to
// "anonymous" (single-tenant mode). The server wiring passes pkg/util/tenant instead.
func DefaultTenantFromHTTP(r *http.Request) (string, error) {
	for _, h := range []string{user.OrgIDHeaderName, "THANOS-TENANT"} {
		if v := r.Header.Get(h); v != "" {
			return v, nil
		}
	}
	return "anonymous", nil
}

// apiPaths are the Prometheus API routes Vigil serves (relative to /api/v1). Others (targets,
// admin, write, ...) are deliberately not mounted: the distributor owns /api/v1/write and
// the ruler owns rules and alerts.
var apiPaths = []struct {
	path    string
	methods []string
}{
	{"/query", []string{http.MethodGet, http.MethodPost}},
	{"/query_range", []string{http.MethodGet, http.MethodPost}},
	{"/query_exemplars", []string{http.MethodGet, http.MethodPost}},
	{"/format_query", []string{http.MethodGet, http.MethodPost}},
	{"/parse_query", []string{http.MethodGet, http.MethodPost}},
	{"/labels", []string{http.MethodGet, http.MethodPost}},
	{"/label/{name}/values", []string{http.MethodGet}},
	{"/series", []string{http.MethodGet, http.MethodPost}},
	{"/status/buildinfo", []string{http.MethodGet}},
	{"/status/config", []string{http.MethodGet}},
	{"/status/flags", []string{http.MethodGet}},
	{"/status/runtimeinfo", []string{http.MethodGet}},
	{"/features", []string{http.MethodGet}},
}

// APIOptions tune the HTTP API.
type APIOptions struct {
	// TenantFromHTTP defaults to DefaultTenantFromHTTP.
	TenantFromHTTP TenantFromHTTP
	// Version is Vigil's version, reported as the revision in status/buildinfo.
	Version string
}

// NewAPIHandler returns the Prometheus HTTP API (Prometheus' own implementation over this
// querier), rooted at "/api/v1". Requests get their tenant injected into the context.
func (q *Querier) NewAPIHandler(opts APIOptions) http.Handler {
	if opts.TenantFromHTTP == nil {
		opts.TenantFromHTTP = DefaultTenantFromHTTP
	}
	api := newPromAPI(q.engine, q, q, q.cfg.LookbackDelta, q.logger, opts.Version)
	return q.withTimeout(q.withTenant(opts.TenantFromHTTP, newAPIRouter(api, q.serveMetadata)))
}

// newAPIRouter routes the supported paths under /api/v1 to api, and metadata to md.
func newAPIRouter(api *v1.API, md http.HandlerFunc) *mux.Router {
	router := route.New().WithPrefix("/api/v1")
	api.Register(router)
	m := mux.NewRouter()
	for _, p := range apiPaths {
		m.Path("/api/v1" + p.path).Methods(p.methods...).Handler(router)
	}
	m.Path("/api/v1/metadata").Methods(http.MethodGet, http.MethodPost).HandlerFunc(md)
	return m
}

// newPromAPI builds Prometheus' own API implementation over the given storage, with
// everything Vigil does not have (targets, rules, admin, remote write) switched off.
func newPromAPI(engine promql.QueryEngine, q storage.SampleAndChunkQueryable, eq storage.ExemplarQueryable, lookback time.Duration, logger *slog.Logger, version string) *v1.API {
	// A private registry: the API's remote-read handler registers metrics we do not serve,
	// and more than one API instance (tests) must not collide.
	reg := prometheus.NewRegistry()
	return v1.NewAPI(
		engine, q, nil, nil, eq,
		nil, nil, nil,
		func() config.Config { return config.DefaultConfig },
		map[string]string{},
		v1.GlobalURLOptions{},
		func(f http.HandlerFunc) http.HandlerFunc { return f },
		nil, "", false,
		logger,
		nil,
		0, 0, 0,
		false,
		// Prometheus' default --web.cors.origin: Grafana in browser mode sends Origin.
		regexp.MustCompile("^(?s:.*)$"),
		func() (v1.RuntimeInfo, error) { return v1.RuntimeInfo{GoroutineCount: runtime.NumGoroutine()}, nil },
		&v1.PrometheusVersion{
			Version:   PrometheusCompatVersion,
			Revision:  version,
			Branch:    "vigil",
			GoVersion: runtime.Version(),
		},
		func() []notifications.Notification { return nil },
		func() (<-chan notifications.Notification, func(), bool) { return nil, func() {}, false },
		reg, reg,
		nil,
		false, nil,
		false, false, false,
		false,
		lookback,
		false, false,
		nil,
		nil,
		v1.OpenAPIOptions{},
	)
}

// RegisterHTTP mounts the Prometheus API under /prometheus/api/v1/ and /api/v1/ with the
// default options. Only the supported paths are registered, so other owners' routes under
// /api/v1 (write, push, rules, alerts) stay free.
func (q *Querier) RegisterHTTP(r *mux.Router) {
	q.RegisterHTTPWithOptions(r, APIOptions{})
}

// RegisterHTTPWithOptions is RegisterHTTP with explicit options.
func (q *Querier) RegisterHTTPWithOptions(r *mux.Router, opts APIOptions) {
	h := q.NewAPIHandler(opts)
	prefixed := http.StripPrefix("/prometheus", h)
	paths := make([]string, 0, len(apiPaths)+1)
	for _, p := range apiPaths {
		paths = append(paths, p.path)
	}
	paths = append(paths, "/metadata")
	for _, p := range paths {
		r.Path("/api/v1" + p).Handler(h)
		r.Path("/prometheus/api/v1" + p).Handler(prefixed)
	}
}

func (q *Querier) withTenant(fromHTTP TenantFromHTTP, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := user.ExtractOrgID(r.Context()); err == nil {
			// An upstream middleware already authenticated the tenant.
			next.ServeHTTP(w, r)
			return
		}
		id, err := fromHTTP(r)
		if err != nil {
			writeAPIError(w, http.StatusUnauthorized, "bad_data", err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(user.InjectOrgID(r.Context(), id)))
	})
}

// withTimeout bounds every API request by -querier.timeout; the engine applies it to
// queries, this covers series, labels and metadata too.
func (q *Querier) withTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

type apiResponse struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

func writeAPIError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiResponse{Status: "error", ErrorType: typ, Error: msg})
}

type metadataEntry struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// serveMetadata answers /api/v1/metadata from the ingesters' metadata service (Prometheus
// derives it from scrape targets, which Vigil does not have). Same parameters and shape.
func (q *Querier) serveMetadata(w http.ResponseWriter, r *http.Request) {
	parse := func(name string) (int, bool) {
		s := r.FormValue(name)
		if s == "" {
			return -1, true
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "bad_data", name+" must be a number")
			return 0, false
		}
		return n, true
	}
	limit, ok := parse("limit")
	if !ok {
		return
	}
	perMetric, ok := parse("limit_per_metric")
	if !ok {
		return
	}
	md, err := q.MetricMetadata(r.Context(), r.FormValue("metric"), limit, perMetric)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if limit == 0 {
		md = nil
	}
	out := make(map[string][]metadataEntry, len(md))
	for name, metas := range md {
		for _, m := range metas {
			out[name] = append(out[name], metadataEntry{Type: strings.ToLower(m.Type), Help: m.Help, Unit: m.Unit})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(apiResponse{Status: "success", Data: out})
}
