package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/tracestore"
	jaegerapi "github.com/vigil-obs/vigil/pkg/tracestore/api/jaeger"
	tempoapi "github.com/vigil-obs/vigil/pkg/tracestore/api/tempo"
	zipkinapi "github.com/vigil-obs/vigil/pkg/tracestore/api/zipkin"
	"github.com/vigil-obs/vigil/pkg/tracestore/derived"
	"github.com/vigil-obs/vigil/pkg/tracestore/receiver"
)

// Trace module names (internal; the user-visible roles group them).
const (
	TraceIngester  = "trace-ingester"
	TraceReceiver  = "trace-receiver"
	TraceQuerier   = "trace-querier"
	TraceCompactor = "trace-compactor"
	Compactor      = "compactor"
)

// TracesConfig groups the trace pipeline's settings.
type TracesConfig struct {
	Ingester       tracestore.IngesterConfig  `yaml:"ingester"`
	Receiver       receiver.Config            `yaml:"receiver"`
	DerivedMetrics derived.Config             `yaml:"derived_metrics"`
	Querier        tracestore.QuerierConfig   `yaml:"querier"`
	Compactor      tracestore.CompactorConfig `yaml:"compactor"`
}

// RegisterFlags registers every trace flag.
func (c *TracesConfig) RegisterFlags(f *flag.FlagSet) {
	c.Ingester.RegisterFlags(f)
	c.Receiver.RegisterFlags(f)
	c.DerivedMetrics.RegisterFlags(f)
	c.Querier.RegisterFlags(f)
	c.Compactor.RegisterFlags(f)
}

func (v *vigil) initTraceIngester() (services.Service, error) {
	ti, err := tracestore.NewTraceIngester(v.cfg.Traces.Ingester, v.bucket, v.overrides.Overrides(), v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create trace ingester: %w", err)
	}
	ti.RegisterGRPC(v.server.GRPC)
	ti.RegisterHTTP(v.server.HTTP)
	return ti, nil
}

// initTraceReceiver takes spans in on every protocol, derives span and service-graph
// metrics into the tenant's metrics (through the distributor, so limits apply) and shards
// spans by trace ID over the ingester ring.
func (v *vigil) initTraceReceiver() (services.Service, error) {
	gen, err := derived.New(v.cfg.Traces.DerivedMetrics, derived.MetricsPusherFunc(func(ctx context.Context, req *prompb.WriteRequest) error {
		_, err := v.distributor.PushMetrics(ctx, req)
		return err
	}), v.reg, v.logger)
	if err != nil {
		return nil, fmt.Errorf("create derived metrics generator: %w", err)
	}
	cfg := v.cfg.Traces.Receiver
	cfg.MultiTenancyEnabled = v.cfg.MultitenancyEnabled
	rcv, err := receiver.New(cfg, v.overrides.Overrides(), v.ingesterRing, receiver.NewGRPCClientFactory(), gen, v.reg, v.logger)
	if err != nil {
		return nil, fmt.Errorf("create trace receiver: %w", err)
	}
	rcv.RegisterHTTP(v.server.HTTP)
	v.traceReceiver = rcv
	return newGroupService(TraceReceiver, gen, rcv)
}

// initTraceQuerier serves the Jaeger, Zipkin and Tempo query APIs over ingester heads and
// bucket blocks.
func (v *vigil) initTraceQuerier() (services.Service, error) {
	heads := tracestore.NewAddrHeadSource(func(context.Context) ([]string, error) {
		rs, err := v.ingesterRing.GetReplicationSetForOperation(ring.Read)
		if errors.Is(err, ring.ErrEmptyRing) {
			return nil, nil // no ingester running: answer from the bucket's blocks
		}
		if err != nil {
			return nil, fmt.Errorf("ingester ring: %w", err)
		}
		return rs.GetAddresses(), nil
	})
	q, err := tracestore.NewQuerier(v.cfg.Traces.Querier, v.bucket, heads, v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create trace querier: %w", err)
	}
	mt := v.cfg.MultitenancyEnabled
	jaegerapi.New(q, mt, v.logger).RegisterHTTP(v.server.HTTP, "/jaeger")
	tempoapi.New(q, mt, v.logger).RegisterHTTP(v.server.HTTP, "/tempo")
	v.zipkinAPI = zipkinapi.New(q, mt, v.logger)
	v.zipkinAPI.RegisterHTTP(v.server.HTTP, "/zipkin")
	return q, nil
}

func (v *vigil) initTraceCompactor() (services.Service, error) {
	c, err := tracestore.NewTraceCompactor(v.cfg.Traces.Compactor, v.bucket, v.logger, v.reg)
	if err != nil {
		return nil, fmt.Errorf("create trace compactor: %w", err)
	}
	return c, nil
}
