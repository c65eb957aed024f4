package querier

import (
	"context"
	"fmt"
	"math"
	"net"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
	"github.com/vigil-obs/vigil/pkg/util/grpcutil"
)

// TenantLabel is the external label a Thanos Querier sees on every series Vigil serves.
const TenantLabel = "tenant_id"

// ThanosStore serves the querier's merged view (ingesters + store-gateways, de-duplicated)
// as a Thanos StoreAPI + Info endpoint, so a Thanos Querier can add Vigil with --endpoint.
// Series carry the external label tenant_id=<tenant>. The tenant comes from gRPC metadata
// (THANOS-TENANT, as Thanos Querier's --query.tenant-header forwards it, or X-Scope-OrgID),
// else the configured default tenant.
type ThanosStore struct {
	*storeapi.Server
	defaultTenant string
}

// ThanosStore returns the querier's Thanos StoreAPI/Info implementation.
func (q *Querier) ThanosStore() *ThanosStore {
	return &ThanosStore{
		Server: storeapi.NewServer(func(context.Context, string) (storage.ChunkQueryable, error) { return q, nil }, storeapi.ServerOptions{
			ExternalLabels: func(tenant string) labels.Labels { return labels.FromStrings(TenantLabel, tenant) },
			DefaultTenant:  q.cfg.ThanosStoreDefaultTenant,
		}),
		defaultTenant: q.cfg.ThanosStoreDefaultTenant,
	}
}

// Info implements infopb.InfoServer. Vigil's data has no fixed time bounds (the bucket
// grows, ingesters move), so it advertises the whole range and lets queries prune.
func (t *ThanosStore) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	resp := &infopb.InfoResponse{
		ComponentType: "store",
		Store:         &infopb.StoreInfo{MinTime: math.MinInt64, MaxTime: math.MaxInt64},
	}
	if tenant, err := storeapi.TenantFromContext(ctx, t.defaultTenant); err == nil {
		resp.LabelSets = []labelpb.ZLabelSet{{Labels: client.ZLabelsFromPromLabels(labels.FromStrings(TenantLabel, tenant))}}
	}
	return resp, nil
}

// RegisterThanosGRPC registers the Thanos StoreAPI and Info API under their standard
// service names (thanos.Store, thanos.info.Info). In single-binary mode the shared server
// already carries the ingester's thanos.Store, so the querier normally serves these on its
// own listener (-querier.thanos-store-listen-address).
func (q *Querier) RegisterThanosGRPC(s grpc.ServiceRegistrar) {
	grpcutil.RegisterStoreAPI(s, grpcutil.ThanosStoreService, grpcutil.ThanosInfoService, q.ThanosStore())
}

// startThanosListener serves the Thanos endpoint on its own port when configured.
func (q *Querier) startThanosListener() error {
	if q.cfg.ThanosStoreListenAddress == "" {
		return nil
	}
	lis, err := net.Listen("tcp", q.cfg.ThanosStoreListenAddress)
	if err != nil {
		return fmt.Errorf("listen on -querier.thanos-store-listen-address %s: %w", q.cfg.ThanosStoreListenAddress, err)
	}
	srv := grpc.NewServer(client.ServerOptions()...)
	q.RegisterThanosGRPC(srv)
	q.thanosAddr = lis.Addr().String()
	q.thanosServer = srv
	q.thanosDone = make(chan struct{})
	go func() {
		defer close(q.thanosDone)
		if err := srv.Serve(lis); err != nil {
			q.logger.Error("thanos store endpoint stopped", "err", err)
		}
	}()
	q.logger.Info("serving Thanos StoreAPI", "addr", q.thanosAddr)
	return nil
}

func (q *Querier) stopThanosListener() {
	if q.thanosServer == nil {
		return
	}
	q.thanosServer.Stop()
	<-q.thanosDone
}

// ThanosStoreAddr is the bound address of the Thanos endpoint ("" when disabled); useful
// with port 0.
func (q *Querier) ThanosStoreAddr() string { return q.thanosAddr }
