package ingester

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// RegisterHTTP mounts the ingester's operational endpoints:
//
//	POST /ingester/flush  cut every tenant's head into blocks and ship them now
//	                      (?tenant=<id> limits it to one tenant)
//	GET  /ingester/ring   this ingester's view of the ingester ring (if ring is enabled)
func (i *Ingester) RegisterHTTP(r *mux.Router) {
	r.Handle("/ingester/flush", http.HandlerFunc(i.flushHandler)).Methods(http.MethodPost)
	if i.lifecycler != nil {
		r.Handle("/ingester/ring", i.lifecycler)
	}
}

func (i *Ingester) flushHandler(w http.ResponseWriter, r *http.Request) {
	// Detach from the request: a client disconnect must not leave a tenant half flushed.
	ctx := context.WithoutCancel(r.Context())
	var err error
	if t := r.URL.Query().Get("tenant"); t != "" {
		err = i.FlushTenant(ctx, t)
	} else {
		err = i.FlushAll(ctx)
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("flush failed: %v", err), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// RegisterGRPC registers the write service (vigil.ingester.Ingester) and the read
// services (thanos.Store, thanos.Exemplars, thanos.Metadata, thanos.info.Info) on s.
// The server must run dskit's ServerUserHeaderInterceptor/StreamServerUserHeaderInterceptor
// so the tenant reaches the context; client.ServerOptions() is recommended for speed.
func (i *Ingester) RegisterGRPC(s *grpc.Server) {
	client.RegisterIngesterServer(s, i)
	i.registerQueryServices(s)
}
