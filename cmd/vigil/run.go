package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/grafana/dskit/dns"
	"github.com/grafana/dskit/grpcutil"
	"github.com/grafana/dskit/server"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vigil-obs/vigil/pkg/util/logutil"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// run starts the modules of the configured targets and blocks until ctx ends or a module
// fails, then stops everything in reverse dependency order.
func (v *vigil) run(ctx context.Context) error {
	svcs, err := v.mm.InitModuleServices(v.cfg.Target...)
	if err != nil {
		return fmt.Errorf("initialise modules: %w", err)
	}
	v.services = svcs

	var list []services.Service
	for _, s := range svcs {
		list = append(list, s)
	}
	sm, err := services.NewManager(list...)
	if err != nil {
		return fmt.Errorf("create service manager: %w", err)
	}
	v.server.HTTP.Path("/ready").Methods(http.MethodGet).Handler(readyHandler(sm))
	// Distributors' and queriers' client pools health-check instances through the standard
	// gRPC health service and drop those that fail it. The ingester registers its own,
	// tied to its state; other roles answer for the whole process.
	if _, ok := v.server.GRPC.GetServiceInfo()[grpc_health_v1.Health_ServiceDesc.ServiceName]; !ok {
		grpc_health_v1.RegisterHealthServer(v.server.GRPC, grpcutil.NewHealthCheck(sm))
	}

	failed := make(chan error, 1)
	sm.AddListener(services.NewManagerListener(nil, nil, func(s services.Service) {
		select {
		case failed <- fmt.Errorf("module failed: %w", s.FailureCase()):
		default:
		}
	}))

	if err := sm.StartAsync(context.Background()); err != nil {
		return fmt.Errorf("start services: %w", err)
	}
	var runErr error
	select {
	case <-ctx.Done():
		v.logger.Info("received shutdown signal, stopping")
	case runErr = <-failed:
		v.logger.Error("stopping after a module failed", "err", runErr)
	}
	sm.StopAsync()
	if err := sm.AwaitStopped(context.Background()); err != nil {
		return errors.Join(runErr, fmt.Errorf("stop services: %w", err))
	}
	return runErr
}

// readyHandler answers 200 once every module is running: what load balancers and tests poll.
func readyHandler(sm *services.Manager) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if !sm.IsHealthy() {
			var notRunning []string
			for state, ss := range sm.ServicesByState() {
				if state == services.Running {
					continue
				}
				for _, s := range ss {
					notRunning = append(notRunning, fmt.Sprintf("%v: %v", s, state))
				}
			}
			http.Error(w, fmt.Sprintf("not ready: %v", notRunning), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}
}

// serverService runs the dskit server and keeps it up until every other module has stopped,
// so in-flight requests drain before the components behind them go away.
type serverService struct {
	services.Service
	srv *server.Server
}

func newServerService(srv *server.Server, others func() []services.Service) services.Service {
	serverDone := make(chan error, 1)
	running := func(ctx context.Context) error {
		go func() { serverDone <- srv.Run() }()
		select {
		case <-ctx.Done():
			return nil
		case err := <-serverDone:
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			return errors.New("server stopped unexpectedly")
		}
	}
	stopping := func(_ error) error {
		for _, s := range others() {
			_ = s.AwaitTerminated(context.Background())
		}
		srv.Shutdown()
		<-serverDone
		return nil
	}
	return &serverService{Service: services.NewBasicService(nil, running, stopping), srv: srv}
}

// servicesToWaitFor lists every module service except the server itself.
func (v *vigil) servicesToWaitFor() []services.Service {
	var out []services.Service
	for name, s := range v.services {
		if name != Server {
			out = append(out, s)
		}
	}
	return out
}

// The shared gRPC server carries internal traffic (distributor → ingester, querier →
// ingester/store-gateway) and Thanos StoreAPI clients. The tenant, when present, travels in
// the X-Scope-OrgID metadata and lands in the context; handlers that need one reject calls
// without it, so a Thanos Querier's Info call (which has none) still works.
func tenantUnaryInterceptor(ctx context.Context, req interface{}, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (interface{}, error) {
	return handler(tenantFromGRPC(ctx), req)
}

func tenantStreamInterceptor(srv interface{}, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, tenantStream{ServerStream: ss, ctx: tenantFromGRPC(ss.Context())})
}

type tenantStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tenantStream) Context() context.Context { return s.ctx }

func tenantFromGRPC(ctx context.Context) context.Context {
	id, withTenant, err := user.ExtractFromGRPCRequest(ctx)
	if err != nil || tenant.Validate(id) != nil {
		// No tenant, or one that must never reach a path: handlers see none and reject.
		return ctx
	}
	return withTenant
}

func newDNSProvider(reg prometheus.Registerer, logger *slog.Logger) *dns.Provider {
	return dns.NewProvider(dns.GolangResolverType, 0, logutil.GoKit(logger), prometheus.WrapRegistererWithPrefix("vigil_", reg))
}
