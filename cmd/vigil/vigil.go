package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/grafana/dskit/flagext"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/kv/memberlist"
	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/runtimeconfig"
	"github.com/grafana/dskit/server"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/compactor"
	"github.com/vigil-obs/vigil/pkg/distributor"
	"github.com/vigil-obs/vigil/pkg/ingester"
	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/querier"
	"github.com/vigil-obs/vigil/pkg/storage/bucket"
	"github.com/vigil-obs/vigil/pkg/storegateway"
	zipkinapi "github.com/vigil-obs/vigil/pkg/tracestore/api/zipkin"
	"github.com/vigil-obs/vigil/pkg/tracestore/receiver"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// Config is the whole of Vigil's configuration; every YAML key also has a flag.
type Config struct {
	Target              flagext.StringSliceCSV `yaml:"target"`
	DataDir             string                 `yaml:"data_dir"`
	MultitenancyEnabled bool                   `yaml:"multitenancy_enabled"`
	PrintConfig         bool                   `yaml:"-"`
	ConfigFile          string                 `yaml:"-"`

	Server        server.Config        `yaml:"server"`
	MemberlistKV  memberlist.KVConfig  `yaml:"memberlist"`
	Storage       bucket.Config        `yaml:"storage"`
	Limits        validation.Limits    `yaml:"limits"`
	RuntimeConfig runtimeconfig.Config `yaml:"runtime_config"`
	Listeners     ListenersConfig      `yaml:"listeners"`

	Distributor    distributor.Config  `yaml:"distributor"`
	Ingester       ingester.Config     `yaml:"ingester"`
	IngesterClient ingclient.Config    `yaml:"ingester_client"`
	Querier        querier.Config      `yaml:"querier"`
	StoreGateway   storegateway.Config `yaml:"store_gateway"`
	Compactor      compactor.Config    `yaml:"compactor"`
	Traces         TracesConfig        `yaml:"traces"`
}

// RegisterFlags registers every flag with Vigil's defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.Target = []string{All}
	f.Var(&c.Target, "target", "Comma-separated roles to run: all, distributor, ingester, querier, store-gateway, compactor.")
	f.StringVar(&c.DataDir, "data-dir", "./data", "Directory for local state: WALs, TSDB heads, the filesystem bucket, caches.")
	f.BoolVar(&c.MultitenancyEnabled, "auth.multitenancy-enabled", false, "Require a tenant in X-Scope-OrgID (or THANOS-TENANT) on every request. When off, all data belongs to tenant 'anonymous'.")
	f.BoolVar(&c.PrintConfig, "print.config", false, "Print the effective configuration as YAML and exit.")
	f.StringVar(&c.ConfigFile, "config.file", "", "YAML configuration file. Flags given on the command line override it.")

	c.Server.RegisterFlags(f)
	setFlagDefault(f, "server.http-listen-port", "9009")
	setFlagDefault(f, "server.grpc-listen-port", "9095")
	// Vigil's own gRPC clients (ingester client) send keepalive pings every
	// 20s, also on idle connections; dskit's defaults (5m, no pings without
	// a stream) answer them with GOAWAY "too_many_pings", which closes the
	// connection between roles and fails the RPCs in flight on it.
	setFlagDefault(f, "server.grpc.keepalive.min-time-between-pings", ingclient.MinKeepaliveTime.String())
	setFlagDefault(f, "server.grpc.keepalive.ping-without-stream-allowed", "true")
	c.MemberlistKV.RegisterFlags(f)
	// The single binary gossips with itself only; scale-out deployments set -memberlist.join.
	setFlagDefault(f, "memberlist.bind-addr", "127.0.0.1")
	setFlagDefault(f, "memberlist.advertise-addr", "127.0.0.1")
	c.Storage.RegisterFlags(f)
	c.Limits.RegisterFlags(f)
	c.RuntimeConfig.RegisterFlags(f)
	c.Listeners.RegisterFlags(f)
	c.Distributor.RegisterFlags(f)
	c.Ingester.RegisterFlags(f)
	c.IngesterClient.RegisterFlags(f)
	c.Querier.RegisterFlags(f)
	c.StoreGateway.RegisterFlags(f)
	c.Compactor.RegisterFlags(f)
	c.Traces.RegisterFlags(f)
}

// Validate checks the configuration; each error names the offending key.
func (c *Config) Validate() error {
	for _, t := range c.Target {
		if !slices.Contains(targetableModules, t) {
			return fmt.Errorf("target: unknown role %q, want one of %s", t, strings.Join(targetableModules, ", "))
		}
	}
	if c.DataDir == "" {
		return errors.New("data_dir: must not be empty")
	}
	if err := c.Storage.Validate(); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	return nil
}

// vigil holds the process-wide pieces modules share.
type vigil struct {
	cfg      *Config
	logger   *slog.Logger
	reg      *prometheus.Registry
	mm       *modules.Manager
	services map[string]services.Service

	server        *server.Server
	memberlist    *memberlist.KVInitService
	ringKV        kv.Client
	ingesterRing  *ring.Ring
	overrides     *validation.OverridesManager
	bucket        objstore.InstrumentedBucket
	distributor   *distributor.Distributor
	traceReceiver *receiver.Receiver
	zipkinAPI     *zipkinapi.API
}

func newVigil(cfg *Config, logOut io.Writer) (*vigil, error) {
	logger, err := logutil.New(logutil.Config{Level: cfg.Server.LogLevel.String(), Format: cfg.Server.LogFormat}, logOut)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	v := &vigil{cfg: cfg, logger: logger, reg: reg}
	v.mm = v.registerModules()
	return v, nil
}

// ringKVConfig is the KV configuration for every ring: memberlist, shared by all rings in
// the process.
func (v *vigil) ringKVConfig() kv.Config {
	return kv.Config{Store: "memberlist", StoreConfig: kv.StoreConfig{MemberlistKV: v.memberlist.GetMemberlistKV}}
}

func (v *vigil) initServer() (services.Service, error) {
	cfg := v.cfg.Server
	cfg.Log = logutil.GoKit(v.logger)
	cfg.Registerer = v.reg
	cfg.Gatherer = v.reg
	cfg.MetricsNamespace = "vigil"
	cfg.RegisterInstrumentation = true
	// Internal traffic is gogo-generated protobuf (prompb, storepb); Vigil's codec marshals it
	// with the generated code instead of reflection.
	cfg.GRPCOptions = append(cfg.GRPCOptions, ingclient.ServerOptions()...)
	cfg.GRPCMiddleware = append(cfg.GRPCMiddleware, tenantUnaryInterceptor)
	cfg.GRPCStreamMiddleware = append(cfg.GRPCStreamMiddleware, tenantStreamInterceptor)
	srv, err := server.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("create server: %w", err)
	}
	v.server = srv
	srv.HTTP.Path("/config").Methods(http.MethodGet).HandlerFunc(v.configHandler)
	srv.HTTP.Path("/").Methods(http.MethodGet).HandlerFunc(v.indexHandler)
	return newServerService(srv, v.servicesToWaitFor), nil
}

func (v *vigil) initMemberlistKV() (services.Service, error) {
	v.cfg.MemberlistKV.Codecs = append(v.cfg.MemberlistKV.Codecs, ring.GetCodec())
	v.memberlist = memberlist.NewKVInitService(&v.cfg.MemberlistKV, logutil.GoKit(v.logger), newDNSProvider(v.reg, v.logger), v.reg)
	return v.memberlist, nil
}

func (v *vigil) initOverrides() (services.Service, error) {
	m, err := validation.NewOverridesManager(v.cfg.RuntimeConfig, v.cfg.Limits, v.reg, v.logger)
	if err != nil {
		return nil, fmt.Errorf("runtime_config: %w", err)
	}
	v.overrides = m
	return m, nil
}

func (v *vigil) initBucket() (services.Service, error) {
	bkt, err := bucket.NewClient(context.Background(), v.cfg.Storage, "vigil", v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	v.bucket = bkt
	return nil, nil
}

func (v *vigil) configHandler(w http.ResponseWriter, _ *http.Request) {
	out, err := v.cfg.yamlString()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/yaml; charset=utf-8")
	_, _ = io.WriteString(w, out)
}

func (v *vigil) indexHandler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Vigil (%s)\n\n/ready\n/metrics\n/config\n/ring\n/debug/pprof/\n/prometheus/api/v1/\n", v.cfg.Target.String())
}
