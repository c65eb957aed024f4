package ingester

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
)

var (
	_ exemplarspb.ExemplarsServer = (*Ingester)(nil)
	_ metadatapb.MetadataServer   = (*Ingester)(nil)
	_ infopb.InfoServer           = (*Ingester)(nil)
)

func (i *Ingester) registerQueryServices(s *grpc.Server) {
	storepb.RegisterStoreServer(s, i.storeServer())
	exemplarspb.RegisterExemplarsServer(s, i)
	metadatapb.RegisterMetadataServer(s, i)
	infopb.RegisterInfoServer(s, i)
}

// queryTSDB returns the tenant's TSDB locked for reading, or nil if the tenant has no
// data here. The caller must call release when done.
func (i *Ingester) queryTSDB(ctx context.Context) (u *userTSDB, release func(), err error) {
	tenantID, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unauthenticated, "no tenant in request: %v", err)
	}
	u = i.getTSDB(tenantID)
	if u == nil {
		return nil, func() {}, nil
	}
	// Shared lock: keeps the TSDB from being closed as idle mid-query.
	u.closeMu.RLock()
	if u.closed {
		u.closeMu.RUnlock()
		return nil, func() {}, nil
	}
	return u, u.closeMu.RUnlock, nil
}

// storeServer serves the StoreAPI (Series, LabelNames, LabelValues) from the tenant TSDBs
// through the same code as the store-gateway: batched responses, buffers reused across
// messages, chunk bytes sent without copying. The ChunkQuerier copies the open head chunk,
// and every other chunk stays valid until the querier is closed, which happens after the
// last message was marshalled.
func (i *Ingester) storeServer() *storeapi.Server {
	return storeapi.NewServer(func(_ context.Context, tenant string) (storage.ChunkQueryable, error) {
		u := i.getTSDB(tenant)
		if u == nil {
			return nil, nil
		}
		return tenantQueryable{u}, nil
	}, storeapi.ServerOptions{})
}

// tenantQueryable holds the tenant's close lock from ChunkQuerier until the querier is
// closed, so an idle close never pulls the TSDB away from a running query.
type tenantQueryable struct{ u *userTSDB }

func (t tenantQueryable) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	t.u.closeMu.RLock()
	if t.u.closed {
		t.u.closeMu.RUnlock()
		return storage.NoopChunkedQuerier(), nil
	}
	q, err := t.u.db.ChunkQuerier(mint, maxt)
	if err != nil {
		t.u.closeMu.RUnlock()
		return nil, err
	}
	return &lockedChunkQuerier{ChunkQuerier: q, unlock: t.u.closeMu.RUnlock}, nil
}

type lockedChunkQuerier struct {
	storage.ChunkQuerier
	unlock func()
}

func (q *lockedChunkQuerier) Close() error {
	err := q.ChunkQuerier.Close()
	if q.unlock != nil {
		q.unlock()
		q.unlock = nil
	}
	return err
}

// Exemplars implements exemplarspb.ExemplarsServer from the TSDB's in-memory exemplar
// storage. The query's selectors pick the series.
func (i *Ingester) Exemplars(req *exemplarspb.ExemplarsRequest, srv exemplarspb.Exemplars_ExemplarsServer) error {
	ctx := srv.Context()
	expr, err := parser.ParseExpr(req.Query)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "parse query %q: %v", req.Query, err)
	}
	selectors := parser.ExtractSelectors(expr)
	if len(selectors) == 0 {
		return nil
	}
	u, release, err := i.queryTSDB(ctx)
	if err != nil {
		return err
	}
	defer release()
	if u == nil {
		return nil
	}
	eq, err := u.db.ExemplarQuerier(ctx)
	if err != nil {
		return status.Errorf(codes.Internal, "exemplar querier: %v", err)
	}
	results, err := eq.Select(req.Start, req.End, selectors...)
	if err != nil {
		return status.Errorf(codes.Internal, "select exemplars: %v", err)
	}
	for _, r := range results {
		data := &exemplarspb.ExemplarData{
			SeriesLabels: labelpb.ZLabelSet{Labels: client.ZLabelsFromPromLabels(r.SeriesLabels)},
		}
		for _, e := range r.Exemplars {
			data.Exemplars = append(data.Exemplars, &exemplarspb.Exemplar{
				Labels: labelpb.ZLabelSet{Labels: client.ZLabelsFromPromLabels(e.Labels)},
				Value:  e.Value,
				Ts:     e.Ts,
			})
		}
		if err := srv.Send(exemplarspb.NewExemplarsResponse(data)); err != nil {
			return fmt.Errorf("send exemplars: %w", err)
		}
	}
	return nil
}

// MetricMetadata implements metadatapb.MetadataServer: the latest metadata per metric
// family pushed for the tenant since this ingester (re)started.
func (i *Ingester) MetricMetadata(req *metadatapb.MetricMetadataRequest, srv metadatapb.Metadata_MetricMetadataServer) error {
	u, release, err := i.queryTSDB(srv.Context())
	if err != nil {
		return err
	}
	defer release()
	if u == nil {
		return nil
	}
	u.metaMu.Lock()
	names := make([]string, 0, len(u.metadata))
	for name := range u.metadata {
		if req.Metric == "" || req.Metric == name {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if req.Limit > 0 && len(names) > int(req.Limit) {
		names = names[:req.Limit]
	}
	out := make(map[string][]metadatapb.Meta, len(names))
	for _, name := range names {
		m := u.metadata[name]
		out[name] = []metadatapb.Meta{{Type: metricTypeString(m.Type), Help: m.Help, Unit: m.Unit}}
	}
	u.metaMu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if err := srv.Send(metadatapb.NewMetricMetadataResponse(metadatapb.FromMetadataMap(out))); err != nil {
		return fmt.Errorf("send metadata: %w", err)
	}
	return nil
}

// Info implements infopb.InfoServer so a Thanos Querier can use the ingester as a
// store endpoint. Time ranges cover the tenant in ctx, or all tenants without one.
func (i *Ingester) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	minT, maxT := int64(math.MaxInt64), int64(math.MinInt64)
	dbs := i.tenantDBs()
	if tenantID, err := user.ExtractOrgID(ctx); err == nil {
		dbs = nil
		if u := i.getTSDB(tenantID); u != nil {
			dbs = append(dbs, u)
		}
	}
	for _, u := range dbs {
		lo, hi := u.timeRange()
		minT, maxT = min(minT, lo), max(maxT, hi)
	}
	if minT > maxT {
		// No data: advertise an empty range the way Thanos components do.
		minT, maxT = math.MaxInt64, math.MinInt64
	}
	return &infopb.InfoResponse{
		ComponentType:  "receive",
		Store:          &infopb.StoreInfo{MinTime: minT, MaxTime: maxT},
		Exemplars:      &infopb.ExemplarsInfo{MinTime: minT, MaxTime: maxT},
		MetricMetadata: &infopb.MetricMetadataInfo{},
	}, nil
}

// metricTypeString renders a remote-write metric type the way Prometheus'
// /api/v1/metadata does ("counter", "gauge", ...).
func metricTypeString(t prompb.MetricMetadata_MetricType) string {
	return strings.ToLower(t.String())
}

func truncate(s []string, limit int64) []string {
	if limit > 0 && int64(len(s)) > limit {
		return s[:limit]
	}
	return s
}
