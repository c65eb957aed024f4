package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/grafana/dskit/services"
	"google.golang.org/grpc"
)

// ListenersConfig holds the protocol-specific listeners besides the main HTTP and gRPC
// ports. An empty address disables a listener.
type ListenersConfig struct {
	OTLPGRPC   string `yaml:"otlp_grpc_listen_address"`
	OTLPHTTP   string `yaml:"otlp_http_listen_address"`
	Zipkin     string `yaml:"zipkin_listen_address"`
	JaegerGRPC string `yaml:"jaeger_grpc_listen_address"`
}

// RegisterFlags registers the listener flags with the ports each protocol's clients default to.
func (c *ListenersConfig) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.OTLPGRPC, "otlp.grpc-listen-address", ":4317", "OTLP gRPC receiver (metrics and traces). Empty disables it.")
	f.StringVar(&c.OTLPHTTP, "otlp.http-listen-address", ":4318", "OTLP HTTP receiver (/v1/metrics, /v1/traces). Empty disables it.")
	f.StringVar(&c.Zipkin, "zipkin.listen-address", ":9411", "Zipkin receiver and query API (/api/v2/...). Empty disables it.")
	f.StringVar(&c.JaegerGRPC, "jaeger.grpc-listen-address", ":14250", "Jaeger gRPC collector (PostSpans). Empty disables it.")
}

// newHTTPListener serves h on addr for the lifetime of the returned service.
func newHTTPListener(name, addr string, h http.Handler, logger *slog.Logger) services.Service {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	return newListener(name, addr, logger, srv.Serve, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
}

// newGRPCListener serves srv on addr for the lifetime of the returned service.
func newGRPCListener(name, addr string, srv *grpc.Server, logger *slog.Logger) services.Service {
	return newListener(name, addr, logger, srv.Serve, func() error { srv.GracefulStop(); return nil })
}

// newListener binds addr when the service starts (so a taken port fails start-up), serves
// on it until the service stops, then shuts the server down gracefully.
func newListener(name, addr string, logger *slog.Logger, serve func(net.Listener) error, shutdown func() error) services.Service {
	done := make(chan error, 1)
	starting := func(context.Context) error {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener on %s: %w", name, addr, err)
		}
		logger.Info("listening", "listener", name, "addr", lis.Addr().String())
		go func() { done <- serve(lis) }()
		return nil
	}
	running := func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			return fmt.Errorf("%s listener: %w", name, err)
		}
	}
	stopping := func(error) error {
		if err := shutdown(); err != nil {
			return fmt.Errorf("shut down %s listener: %w", name, err)
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		return nil
	}
	return services.NewBasicService(starting, running, stopping).WithName(name)
}

// newGroupService runs several services as one module: all start, all stop.
func newGroupService(name string, svcs ...services.Service) (services.Service, error) {
	m, err := services.NewManager(svcs...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	starting := func(ctx context.Context) error {
		if err := m.StartAsync(ctx); err != nil {
			return err
		}
		return m.AwaitHealthy(ctx)
	}
	running := func(ctx context.Context) error {
		failed := make(chan error, 1)
		m.AddListener(services.NewManagerListener(nil, nil, func(s services.Service) {
			select {
			case failed <- s.FailureCase():
			default:
			}
		}))
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	stopping := func(error) error {
		m.StopAsync()
		return m.AwaitStopped(context.Background())
	}
	return services.NewBasicService(starting, running, stopping).WithName(name), nil
}
