package ingester

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

var (
	_ storepb.StoreServer         = (*Ingester)(nil)
	_ exemplarspb.ExemplarsServer = (*Ingester)(nil)
	_ metadatapb.MetadataServer   = (*Ingester)(nil)
	_ infopb.InfoServer           = (*Ingester)(nil)
)

func (i *Ingester) registerQueryServices(s *grpc.Server) {
	storepb.RegisterStoreServer(s, i)
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

func promMatchers(ms []storepb.LabelMatcher) ([]*labels.Matcher, error) {
	matchers, err := storepb.MatchersToPromMatchers(ms...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad matchers: %v", err)
	}
	if len(matchers) == 0 {
		// The TSDB needs at least one matcher; no matcher means everything.
		matchers = []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	}
	return matchers, nil
}

func selectHints(req *storepb.SeriesRequest) *storage.SelectHints {
	h := &storage.SelectHints{Start: req.MinTime, End: req.MaxTime, Step: req.Step, Range: req.Range, Limit: int(req.Limit)}
	if qh := req.QueryHints; qh != nil {
		h.Step = qh.StepMillis
		if qh.Func != nil {
			h.Func = qh.Func.Name
		}
		if qh.Grouping != nil {
			h.By, h.Grouping = qh.Grouping.By, qh.Grouping.Labels
		}
		if qh.Range != nil {
			h.Range = qh.Range.Millis
		}
	}
	if req.SkipChunks {
		h.Func = "series"
	}
	return h
}

// Series implements storepb.StoreServer: series of the tenant in ctx matching the
// request, sorted by labels, with raw XOR/histogram/float-histogram chunks overlapping
// [MinTime, MaxTime] (chunks may extend beyond it; the querier trims).
func (i *Ingester) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	ctx := srv.Context()
	u, release, err := i.queryTSDB(ctx)
	if err != nil {
		return err
	}
	defer release()
	if u == nil {
		return nil
	}
	matchers, err := promMatchers(req.Matchers)
	if err != nil {
		return err
	}
	hints := selectHints(req)
	sent := 0
	limitReached := func() bool { return req.Limit > 0 && int64(sent) >= req.Limit }

	if req.SkipChunks {
		q, err := u.db.Querier(req.MinTime, req.MaxTime)
		if err != nil {
			return status.Errorf(codes.Internal, "open querier: %v", err)
		}
		defer q.Close()
		ss := q.Select(ctx, true, hints, matchers...)
		for ss.Next() && !limitReached() {
			if err := srv.Send(storepb.NewSeriesResponse(&storepb.Series{Labels: client.ZLabelsFromPromLabels(ss.At().Labels())})); err != nil {
				return fmt.Errorf("send series: %w", err)
			}
			sent++
		}
		return finishSeriesSet(srv, ss.Err(), ss.Warnings().AsErrors())
	}

	q, err := u.db.ChunkQuerier(req.MinTime, req.MaxTime)
	if err != nil {
		return status.Errorf(codes.Internal, "open chunk querier: %v", err)
	}
	defer q.Close()
	ss := q.Select(ctx, true, hints, matchers...)
	for ss.Next() && !limitReached() {
		s := ss.At()
		series := &storepb.Series{Labels: client.ZLabelsFromPromLabels(s.Labels())}
		cit := s.Iterator(nil)
		for cit.Next() {
			m := cit.At()
			if m.Chunk == nil {
				continue
			}
			enc, err := chunkEncoding(m.Chunk.Encoding())
			if err != nil {
				return status.Errorf(codes.Internal, "series %s: %v", s.Labels(), err)
			}
			series.Chunks = append(series.Chunks, storepb.AggrChunk{
				MinTime: m.MinTime,
				MaxTime: m.MaxTime,
				// Copy: head chunk bytes belong to the TSDB and may be reused after the
				// querier is closed.
				Raw: &storepb.Chunk{Type: enc, Data: bytes.Clone(m.Chunk.Bytes())},
			})
		}
		if err := cit.Err(); err != nil {
			return status.Errorf(codes.Internal, "iterate chunks of %s: %v", s.Labels(), err)
		}
		if len(series.Chunks) == 0 {
			continue
		}
		if err := srv.Send(storepb.NewSeriesResponse(series)); err != nil {
			return fmt.Errorf("send series: %w", err)
		}
		sent++
	}
	return finishSeriesSet(srv, ss.Err(), ss.Warnings().AsErrors())
}

func finishSeriesSet(srv storepb.Store_SeriesServer, err error, warnings []error) error {
	if err != nil {
		return status.Errorf(codes.Internal, "select series: %v", err)
	}
	for _, w := range warnings {
		if err := srv.Send(storepb.NewWarnSeriesResponse(w)); err != nil {
			return fmt.Errorf("send warning: %w", err)
		}
	}
	return nil
}

func chunkEncoding(e chunkenc.Encoding) (storepb.Chunk_Encoding, error) {
	switch e {
	case chunkenc.EncXOR:
		return storepb.Chunk_XOR, nil
	case chunkenc.EncHistogram:
		return storepb.Chunk_HISTOGRAM, nil
	case chunkenc.EncFloatHistogram:
		return storepb.Chunk_FLOAT_HISTOGRAM, nil
	}
	return 0, fmt.Errorf("chunk encoding %s has no Store API equivalent", e)
}

// LabelNames implements storepb.StoreServer.
func (i *Ingester) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	u, release, err := i.queryTSDB(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if u == nil {
		return &storepb.LabelNamesResponse{}, nil
	}
	matchers, err := storepb.MatchersToPromMatchers(req.Matchers...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad matchers: %v", err)
	}
	q, err := u.db.Querier(req.Start, req.End)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "open querier: %v", err)
	}
	defer q.Close()
	names, warns, err := q.LabelNames(ctx, &storage.LabelHints{Limit: int(req.Limit)}, matchers...)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "label names: %v", err)
	}
	// The TSDB treats the limit as a hint (the head ignores it without matchers).
	return &storepb.LabelNamesResponse{Names: truncate(names, req.Limit), Warnings: warnStrings(warns.AsErrors())}, nil
}

// LabelValues implements storepb.StoreServer.
func (i *Ingester) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if req.Label == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	u, release, err := i.queryTSDB(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	if u == nil {
		return &storepb.LabelValuesResponse{}, nil
	}
	matchers, err := storepb.MatchersToPromMatchers(req.Matchers...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad matchers: %v", err)
	}
	q, err := u.db.Querier(req.Start, req.End)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "open querier: %v", err)
	}
	defer q.Close()
	values, warns, err := q.LabelValues(ctx, req.Label, &storage.LabelHints{Limit: int(req.Limit)}, matchers...)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "label values: %v", err)
	}
	return &storepb.LabelValuesResponse{Values: truncate(values, req.Limit), Warnings: warnStrings(warns.AsErrors())}, nil
}

func warnStrings(ws []error) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.Error())
	}
	return out
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
