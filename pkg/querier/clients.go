package querier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storegateway"
	"github.com/vigil-obs/vigil/pkg/util/grpcutil"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
)

// Client is what the querier needs from a backend (ingester or store-gateway). The
// store-gateway only serves the StoreAPI; its exemplar and metadata calls answer
// Unimplemented, which the querier tolerates.
type Client interface {
	storepb.StoreClient
	exemplarspb.ExemplarsClient
	metadatapb.MetadataClient
	io.Closer
}

// ClientFactory dials a backend by address.
type ClientFactory func(addr string) (Client, error)

// NewClientFactory dials backends with the ingester client (gRPC, Vigil's gogo-aware
// codec, tenant forwarded as dskit org ID metadata). Store-gateways speak the same StoreAPI.
func NewClientFactory(cfg client.Config) ClientFactory {
	return func(addr string) (Client, error) {
		c, err := client.New(addr, cfg)
		if err != nil {
			return nil, fmt.Errorf("querier client: %w", err)
		}
		return c, nil
	}
}

// NewStoreGatewayClientFactory dials store-gateways. They serve the StoreAPI under their own
// service names (storegateway.ServiceRenames), because in single-binary mode they share a
// gRPC server, and so an address, with an ingester.
func NewStoreGatewayClientFactory(cfg client.Config) ClientFactory {
	return func(addr string) (Client, error) {
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		conn, err := grpc.NewClient(addr, client.DialOptions(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("dial store-gateway %s: %w", addr, err)
		}
		return storeGatewayClient{
			StoreClient: grpcutil.NewStoreClient(conn, storegateway.StoreServiceName),
			Closer:      conn,
		}, nil
	}
}

// storeGatewayClient serves only the StoreAPI; exemplars and metadata live in ingesters.
type storeGatewayClient struct {
	storepb.StoreClient
	io.Closer
}

func (storeGatewayClient) Exemplars(context.Context, *exemplarspb.ExemplarsRequest, ...grpc.CallOption) (exemplarspb.Exemplars_ExemplarsClient, error) {
	return nil, status.Error(codes.Unimplemented, "store-gateways hold no exemplars")
}

func (storeGatewayClient) MetricMetadata(context.Context, *metadatapb.MetricMetadataRequest, ...grpc.CallOption) (metadatapb.Metadata_MetricMetadataClient, error) {
	return nil, status.Error(codes.Unimplemented, "store-gateways hold no metadata")
}

// clientPool keeps one client per address for the querier's lifetime.
type clientPool struct {
	factory ClientFactory
	mtx     sync.Mutex
	clients map[string]Client
}

func newClientPool(f ClientFactory) *clientPool {
	return &clientPool{factory: f, clients: map[string]Client{}}
}

func (p *clientPool) get(addr string) (Client, error) {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	c, err := p.factory(addr)
	if err != nil {
		return nil, err
	}
	p.clients[addr] = c
	return c, nil
}

func (p *clientPool) close() error {
	p.mtx.Lock()
	defer p.mtx.Unlock()
	var errs []error
	for addr, c := range p.clients {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close client %s: %w", addr, err))
		}
		delete(p.clients, addr)
	}
	return errors.Join(errs...)
}

// AddressSource lists the backends to query. maxErrors is how many of them may fail
// without failing the query (replication makes the data available elsewhere).
type AddressSource interface {
	Addresses(ctx context.Context) (addrs []string, maxErrors int, err error)
}

// StaticAddresses is a fixed list of backends, none of which may fail.
type StaticAddresses []string

// Addresses implements AddressSource.
func (s StaticAddresses) Addresses(context.Context) ([]string, int, error) { return s, 0, nil }

// NewIngesterRing returns a read-only client of the ingester ring (key "ingester") over
// kvClient. It is a service: pass it in Deps.Subservices and wrap it in RingAddresses.
func NewIngesterRing(cfg ring.Config, kvClient kv.Client, logger *slog.Logger, reg prometheus.Registerer) (*ring.Ring, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r, err := ring.NewWithStoreClientAndStrategy(cfg, "ingester", "ingester", kvClient, ring.NewDefaultReplicationStrategy(), reg, logutil.GoKit(logger))
	if err != nil {
		return nil, fmt.Errorf("create ingester ring client: %w", err)
	}
	return r, nil
}

// RingAddresses lists the healthy instances of a dskit ring (the ingesters).
type RingAddresses struct{ Ring ring.ReadRing }

// Addresses implements AddressSource.
func (r RingAddresses) Addresses(context.Context) ([]string, int, error) {
	rs, err := r.Ring.GetReplicationSetForOperation(ring.Read)
	if errors.Is(err, ring.ErrEmptyRing) {
		// No ingester is running (scaled to zero, or all restarting): older data is still
		// in the bucket, so answer from the store-gateways rather than failing.
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("ingester ring: %w", err)
	}
	return rs.GetAddresses(), rs.MaxErrors, nil
}
