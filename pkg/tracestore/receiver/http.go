package receiver

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// RegisterHTTP mounts the write endpoints that live on the main HTTP port
// (9009): POST /otlp/v1/traces and POST /zipkin/api/v2/spans.
func (r *Receiver) RegisterHTTP(router *mux.Router) {
	router.Handle("/otlp/v1/traces", http.HandlerFunc(r.handleOTLP)).Methods(http.MethodPost)
	router.Handle("/zipkin/api/v2/spans", http.HandlerFunc(r.handleZipkin)).Methods(http.MethodPost)
}

// OTLPHTTPHandler serves OTLP/HTTP traces; the lead mounts it at
// /v1/traces on the OTLP HTTP listener (4318).
func (r *Receiver) OTLPHTTPHandler() http.Handler { return http.HandlerFunc(r.handleOTLP) }

// ZipkinHandler serves Zipkin span ingestion; the lead mounts it at
// /api/v2/spans on the Zipkin listener (9411).
func (r *Receiver) ZipkinHandler() http.Handler { return http.HandlerFunc(r.handleZipkin) }

// httpError is a failure before the spans reach Push.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// readBody resolves the tenant and reads the (optionally gzip-compressed)
// body, bounded by MaxRecvMsgSize after decompression.
func (r *Receiver) readBody(req *http.Request) (string, []byte, error) {
	if req.Method != http.MethodPost {
		return "", nil, &httpError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use POST", req.Method)}
	}
	tn, err := tenant.FromHTTP(req, r.cfg.MultiTenancyEnabled)
	if err != nil {
		if errors.Is(err, tenant.ErrMissing) {
			return "", nil, &httpError{http.StatusUnauthorized, err.Error()}
		}
		return "", nil, &httpError{http.StatusBadRequest, err.Error()}
	}
	var body io.Reader = req.Body
	switch enc := strings.ToLower(strings.TrimSpace(req.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			return "", nil, &httpError{http.StatusBadRequest, fmt.Sprintf("invalid gzip body: %v", err)}
		}
		defer gz.Close()
		body = gz
	default:
		return "", nil, &httpError{http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Encoding %q: use gzip or none", enc)}
	}
	limit := r.cfg.MaxRecvMsgSize
	b, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		return "", nil, &httpError{http.StatusBadRequest, fmt.Sprintf("reading request body: %v", err)}
	}
	if len(b) > limit {
		return "", nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes (after decompression); send smaller batches or raise -%s", limit, flagMaxRecvMsg)}
	}
	return tn, b, nil
}

func mediaType(req *http.Request) string {
	ct := req.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return strings.ToLower(mt)
}
