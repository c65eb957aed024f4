package receiver

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/vigil-obs/vigil/pkg/tracestore/translate"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// handleZipkin serves POST /api/v2/spans: a JSON array of v2 spans or a
// proto3 ListOfSpans, answered with 202 as the Zipkin API specifies.
func (r *Receiver) handleZipkin(w http.ResponseWriter, req *http.Request) {
	mt := mediaType(req)
	if mt != "" && mt != ctJSON && mt != ctProtobuf {
		http.Error(w, fmt.Sprintf("unsupported Content-Type %q: use application/json or application/x-protobuf", req.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	tn, body, err := r.readBody(req)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			http.Error(w, he.msg, he.code)
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var td ptrace.Traces
	if mt == ctProtobuf {
		// X-B3-Flags: 1 marks a debug request, as in Zipkin's collector.
		td, err = translate.ZipkinProtoToOTLP(body, req.Header.Get("X-B3-Flags") == "1")
	} else {
		td, err = translate.ZipkinJSONToOTLP(body)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("malformed zipkin v2 spans: %v", err), http.StatusBadRequest)
		return
	}
	res, err := r.Push(req.Context(), tn, "zipkin", td)
	if err != nil {
		var pe *PushError
		if errors.As(err, &pe) {
			if pe.Code == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, pe.Msg, pe.Code)
			return
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if res.Rejected > 0 {
		// Zipkin has no partial-success response: the accepted spans are
		// stored, and 400 tells the reporter not to resend the batch.
		http.Error(w, fmt.Sprintf("accepted %d of %d spans: %s", res.Accepted, res.Accepted+res.Rejected, res.Msg), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
