package ingester

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

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
//
// It also registers the standard gRPC health service (SERVING while the ingester runs),
// which the distributor's dskit client pool health-checks, unless another component
// registered one on s already.
func (i *Ingester) RegisterGRPC(s *grpc.Server) {
	client.RegisterIngesterServer(s, i)
	i.registerQueryServices(s)
	if _, ok := s.GetServiceInfo()[grpc_health_v1.Health_ServiceDesc.ServiceName]; !ok {
		grpc_health_v1.RegisterHealthServer(s, healthServer{i: i})
	}
}

// healthServer reports SERVING while the ingester is running.
type healthServer struct {
	grpc_health_v1.UnimplementedHealthServer
	i *Ingester
}

func (h healthServer) Check(context.Context, *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	if h.i.State() == services.Running {
		return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
	}
	return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_NOT_SERVING}, nil
}
