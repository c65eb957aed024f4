// Command vigil runs the Vigil observability backend. With no flags it starts every role in
// one process on embedded defaults: data under ./data, a filesystem bucket, a memberlist ring
// on loopback with replication factor 1, and multi-tenancy off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.PrintConfig {
		out, err := cfg.yamlString()
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, out)
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	v, err := newVigil(cfg, stderr)
	if err != nil {
		return err
	}
	v.logger.Info("starting vigil", "targets", cfg.Target.String(), "http_port", cfg.Server.HTTPListenPort, "grpc_port", cfg.Server.GRPCListenPort, "data_dir", cfg.DataDir)
	return v.run(ctx)
}

var _ = slog.Default
