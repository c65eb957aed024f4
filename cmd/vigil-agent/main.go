// Command vigil-agent is Vigil's zero-instrumentation eBPF node agent: it
// observes TCP connections and HTTP/1.x, PostgreSQL, MySQL, Redis and DNS
// traffic of every process on the node from kernel tracepoints and sends
// RED metrics (remote write) and spans (OTLP/HTTP) to Vigil.
//
//	sudo vigil-agent -remote-write.url http://vigil:9009/api/v1/push -otlp.endpoint http://vigil:9009/otlp
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-obs/vigil/pkg/agent"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "vigil-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("vigil-agent", flag.ContinueOnError)
	var cfg agent.Config
	cfg.RegisterFlags(fs)
	logLevel := fs.String("log.level", "info", "Log level: debug, info, warn, error.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log.level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	agent.ApplyRuntimeSettings(cfg)
	if cfg.RemoteWrite.URL == "" && cfg.OTLP.Endpoint == "" {
		logger.Warn("neither -remote-write.url nor -otlp.endpoint is set: data is only visible on /metrics/exported")
	}
	a, err := agent.New(cfg, logger)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Start(ctx); err != nil {
		return err
	}
	logger.Info("vigil-agent running", "remote_write", cfg.RemoteWrite.URL, "otlp", cfg.OTLP.Endpoint)
	<-ctx.Done()
	logger.Info("shutting down")
	a.Stop()
	return nil
}
