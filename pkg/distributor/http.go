package distributor

import (
	"github.com/gorilla/mux"
)

// RegisterHTTP mounts the write endpoints on the main HTTP server (port 9009):
// remote write 1.0/2.0 at /api/v1/push and /api/v1/write, OTLP metrics at
// /otlp/v1/metrics. Non-POST requests get 405 from the handlers themselves.
func (d *Distributor) RegisterHTTP(r *mux.Router) {
	rw := d.RemoteWriteHandler()
	r.Path("/api/v1/push").Handler(rw)
	r.Path("/api/v1/write").Handler(rw)
	r.Path("/otlp/v1/metrics").Handler(d.OTLPMetricsHandler())
}
