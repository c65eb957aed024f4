package main

import (
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/modules"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/compactor"
	"github.com/vigil-obs/vigil/pkg/distributor"
	"github.com/vigil-obs/vigil/pkg/ingester"
	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/querier"
	"github.com/vigil-obs/vigil/pkg/storegateway"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// Module names; the user-visible ones are -target values.
const (
	All          = "all"
	Distributor  = "distributor"
	Ingester     = "ingester"
	Querier      = "querier"
	StoreGateway = "store-gateway"

	// The roles above group these: a role runs the metrics and the trace side of its job.
	MetricsDistributor = "metrics-distributor"
	MetricsIngester    = "metrics-ingester"
	MetricsQuerier     = "metrics-querier"
	MetricsCompactor   = "metrics-compactor"

	Server          = "server"
	MemberlistKV    = "memberlist-kv"
	Overrides       = "overrides"
	Bucket          = "bucket"
	IngesterRing    = "ingester-ring"
	OTLPListeners   = "otlp-listeners"
	listenerModules = "listeners"
)

// targetableModules are the roles -target accepts.
var targetableModules = []string{All, Distributor, Ingester, Querier, StoreGateway, Compactor}

// registerModules declares every module and its dependencies; dskit initialises a target's
// dependencies first and stops them last.
func (v *vigil) registerModules() *modules.Manager {
	mm := modules.NewManager(logutil.GoKit(v.logger))
	mm.RegisterModule(Server, v.initServer, modules.UserInvisibleModule)
	mm.RegisterModule(MemberlistKV, v.initMemberlistKV, modules.UserInvisibleModule)
	mm.RegisterModule(Overrides, v.initOverrides, modules.UserInvisibleModule)
	mm.RegisterModule(Bucket, v.initBucket, modules.UserInvisibleModule)
	mm.RegisterModule(IngesterRing, v.initIngesterRing, modules.UserInvisibleModule)
	mm.RegisterModule(MetricsIngester, v.initIngester, modules.UserInvisibleModule)
	mm.RegisterModule(MetricsDistributor, v.initDistributor, modules.UserInvisibleModule)
	mm.RegisterModule(MetricsQuerier, v.initQuerier, modules.UserInvisibleModule)
	mm.RegisterModule(TraceIngester, v.initTraceIngester, modules.UserInvisibleModule)
	mm.RegisterModule(TraceReceiver, v.initTraceReceiver, modules.UserInvisibleModule)
	mm.RegisterModule(TraceQuerier, v.initTraceQuerier, modules.UserInvisibleModule)
	mm.RegisterModule(TraceCompactor, v.initTraceCompactor, modules.UserInvisibleModule)
	mm.RegisterModule(MetricsCompactor, v.initMetricsCompactor, modules.UserInvisibleModule)
	mm.RegisterModule(StoreGateway, v.initStoreGateway)
	mm.RegisterModule(listenerModules, v.initListeners, modules.UserInvisibleModule)
	mm.RegisterModule(Ingester, nil)
	mm.RegisterModule(Distributor, nil)
	mm.RegisterModule(Querier, nil)
	mm.RegisterModule(Compactor, nil)
	mm.RegisterModule(All, nil)

	deps := map[string][]string{
		MemberlistKV:       {Server},
		Overrides:          {Server},
		Bucket:             {Server},
		IngesterRing:       {MemberlistKV},
		MetricsIngester:    {Server, MemberlistKV, Overrides, Bucket},
		TraceIngester:      {Server, Overrides, Bucket},
		MetricsDistributor: {Server, MemberlistKV, Overrides},
		TraceReceiver:      {MetricsDistributor, IngesterRing},
		MetricsQuerier:     {Server, IngesterRing},
		TraceQuerier:       {Server, IngesterRing, Bucket},
		TraceCompactor:     {Server, Bucket},
		MetricsCompactor:   {Server, Bucket},
		StoreGateway:       {Server, Bucket},
		listenerModules:    {MetricsDistributor, TraceReceiver, TraceQuerier},
		Ingester:           {MetricsIngester, TraceIngester},
		Distributor:        {MetricsDistributor, TraceReceiver, listenerModules},
		Querier:            {MetricsQuerier, TraceQuerier},
		Compactor:          {MetricsCompactor, TraceCompactor},
		All:                {Ingester, Distributor, Querier, StoreGateway, Compactor},
	}
	for mod, d := range deps {
		if err := mm.AddDependency(mod, d...); err != nil {
			panic(err) // a wiring bug, caught by every test that starts the binary
		}
	}
	return mm
}

// ringKVClient is the KV client every ring user in this process shares.
func (v *vigil) ringKVClient() (kv.Client, error) {
	if v.ringKV != nil {
		return v.ringKV, nil
	}
	c, err := kv.NewClient(v.ringKVConfig(), ring.GetCodec(), kv.RegistererWithKVName(v.reg, "ingester-ring"), logutil.GoKit(v.logger))
	if err != nil {
		return nil, fmt.Errorf("create ring KV client: %w", err)
	}
	v.ringKV = c
	return c, nil
}

// initIngesterRing builds the read view of the ingester ring that the querier and the trace
// receiver use, and serves its status page on /ring.
func (v *vigil) initIngesterRing() (services.Service, error) {
	c, err := v.ringKVClient()
	if err != nil {
		return nil, err
	}
	cfg := ring.Config{
		HeartbeatTimeout:  v.cfg.Ingester.Ring.HeartbeatTimeout,
		ReplicationFactor: v.cfg.Distributor.ReplicationFactor,
	}
	r, err := ring.NewWithStoreClientAndStrategy(cfg, ingester.RingKey, ingester.RingKey, c, ring.NewDefaultReplicationStrategy(),
		prometheus.WrapRegistererWith(prometheus.Labels{"component": "querier"}, v.reg), logutil.GoKit(v.logger))
	if err != nil {
		return nil, fmt.Errorf("create ingester ring: %w", err)
	}
	v.ingesterRing = r
	v.server.HTTP.Path("/ring").Handler(r)
	return r, nil
}

func (v *vigil) initIngester() (services.Service, error) {
	c, err := v.ringKVClient()
	if err != nil {
		return nil, err
	}
	cfg := v.cfg.Ingester
	// The ingester enforces its share of the global series limits, which depends on how
	// the distributors place series.
	cfg.Ring.ReplicationFactor = v.cfg.Distributor.ReplicationFactor
	cfg.Ring.ZoneAwarenessEnabled = v.cfg.Distributor.ZoneAwarenessEnabled
	ing, err := ingester.New(cfg, v.overrides.Overrides(), v.bucket, c, v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create ingester: %w", err)
	}
	ing.RegisterGRPC(v.server.GRPC)
	ing.RegisterHTTP(v.server.HTTP)
	return ing, nil
}

func (v *vigil) initDistributor() (services.Service, error) {
	c, err := v.ringKVClient()
	if err != nil {
		return nil, err
	}
	cfg := v.cfg.Distributor
	cfg.MultiTenancyEnabled = v.cfg.MultitenancyEnabled
	d, err := distributor.New(cfg, v.overrides.Overrides(), c, ingclient.NewPoolFactory(v.cfg.IngesterClient), v.reg, v.logger)
	if err != nil {
		return nil, fmt.Errorf("create distributor: %w", err)
	}
	d.RegisterHTTP(v.server.HTTP)
	v.distributor = d
	return d, nil
}

func (v *vigil) initQuerier() (services.Service, error) {
	q, err := querier.New(v.cfg.Querier, querier.Deps{
		Ingesters:  querier.RingAddresses{Ring: v.ingesterRing},
		Logger:     v.logger,
		Registerer: v.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("create querier: %w", err)
	}
	multiTenant := v.cfg.MultitenancyEnabled
	q.RegisterHTTPWithOptions(v.server.HTTP, querier.APIOptions{
		TenantFromHTTP: func(r *http.Request) (string, error) { return tenant.FromHTTP(r, multiTenant) },
	})
	return q, nil
}

func (v *vigil) initStoreGateway() (services.Service, error) {
	g, err := storegateway.New(v.cfg.StoreGateway, v.bucket, v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create store-gateway: %w", err)
	}
	g.RegisterGRPC(v.server.GRPC)
	g.RegisterHTTP(v.server.HTTP)
	return g, nil
}

// initMetricsCompactor runs the metrics block compactor (merging, replica dedup, retention,
// deletion, bucket index); the trace compactor is its sibling in the compactor role.
func (v *vigil) initMetricsCompactor() (services.Service, error) {
	c, err := compactor.New(v.cfg.Compactor, v.bucket, v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create metrics compactor: %w", err)
	}
	return c, nil
}

// initListeners starts the protocol-specific ports (OTLP gRPC/HTTP) in front of the
// components registered on them.
func (v *vigil) initListeners() (services.Service, error) {
	var svcs []services.Service
	newGRPCServer := func() *grpc.Server {
		return grpc.NewServer(append(ingclient.ServerOptions(), grpc.ChainUnaryInterceptor(tenantUnaryInterceptor), grpc.ChainStreamInterceptor(tenantStreamInterceptor))...)
	}
	if addr := v.cfg.Listeners.OTLPGRPC; addr != "" {
		srv := newGRPCServer()
		v.distributor.RegisterOTLPGRPC(srv)
		v.traceReceiver.RegisterOTLPGRPC(srv)
		svcs = append(svcs, newGRPCListener("otlp-grpc", addr, srv, v.logger))
	}
	if addr := v.cfg.Listeners.OTLPHTTP; addr != "" {
		r := mux.NewRouter()
		r.Path("/v1/metrics").Handler(v.distributor.OTLPMetricsHandler())
		r.Path("/v1/traces").Handler(v.traceReceiver.OTLPHTTPHandler())
		svcs = append(svcs, newHTTPListener("otlp-http", addr, r, v.logger))
	}
	if addr := v.cfg.Listeners.Zipkin; addr != "" {
		r := mux.NewRouter()
		r.Path("/api/v2/spans").Methods(http.MethodPost).Handler(v.traceReceiver.ZipkinHandler())
		v.zipkinAPI.RegisterHTTP(r, "")
		svcs = append(svcs, newHTTPListener("zipkin", addr, r, v.logger))
	}
	if addr := v.cfg.Listeners.JaegerGRPC; addr != "" {
		srv := newGRPCServer()
		v.traceReceiver.RegisterJaegerGRPC(srv)
		svcs = append(svcs, newGRPCListener("jaeger-grpc", addr, srv, v.logger))
	}
	if len(svcs) == 0 {
		return nil, nil
	}
	return newGroupService("listeners", svcs...)
}
