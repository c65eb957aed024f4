// Package storeapi serves the Thanos StoreAPI (storepb.Store) on top of any Prometheus
// storage.ChunkQueryable. The ingester, the store-gateway and the querier's Thanos interop
// endpoint all serve their data through it, so batching, buffer reuse and limits behave the
// same on every read path.
package storeapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ThanosTenantHeader is the gRPC metadata key a Thanos Querier uses to forward the tenant.
const ThanosTenantHeader = "thanos-tenant"

// SourceFunc returns the data the tenant can see. A nil ChunkQueryable means the tenant has
// no data (the server answers with empty results instead of an error).
type SourceFunc func(ctx context.Context, tenant string) (storage.ChunkQueryable, error)

// ServerOptions tune a Server. The zero value serves plain tenant data.
type ServerOptions struct {
	// ExternalLabels, when set, returns labels added to every series of the tenant (Thanos
	// "external labels", e.g. tenant_id). Matchers on these names are evaluated against the
	// external value instead of the stored data.
	ExternalLabels func(tenant string) labels.Labels
	// DefaultTenant is used when a request carries no tenant (single-tenant mode). Empty
	// means such requests are rejected.
	DefaultTenant string
}

// Server implements storepb.StoreServer on top of any storage.ChunkQueryable, returning
// chunks exactly as stored (no re-encoding), series sorted by labels.
type Server struct {
	src  SourceFunc
	opts ServerOptions
}

var _ storepb.StoreServer = (*Server)(nil)

// NewServer returns a StoreAPI server reading from src.
func NewServer(src SourceFunc, opts ServerOptions) *Server {
	return &Server{src: src, opts: opts}
}

// TenantFromContext returns the tenant of a gRPC request: the dskit org ID, else the Thanos
// tenant header, else def. It errors with codes.Unauthenticated when none is available.
func TenantFromContext(ctx context.Context, def string) (string, error) {
	if id, err := user.ExtractOrgID(ctx); err == nil && id != "" {
		return id, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, k := range []string{ThanosTenantHeader, strings.ToLower(user.OrgIDHeaderName)} {
			if v := md.Get(k); len(v) > 0 && v[0] != "" {
				return v[0], nil
			}
		}
	}
	if def != "" {
		return def, nil
	}
	return "", status.Error(codes.Unauthenticated, "no tenant ID in request")
}

// prepare resolves tenant, external labels and matchers. ok=false means the request's
// matchers can never match this tenant's external labels, so the answer is empty.
// The returned context carries the tenant as dskit org ID, so sources that fan out
// further (the querier) forward it.
func (s *Server) prepare(ctx context.Context, pbms []storepb.LabelMatcher) (_ context.Context, tenant string, ext labels.Labels, ms []*labels.Matcher, ok bool, err error) {
	tenant, err = TenantFromContext(ctx, s.opts.DefaultTenant)
	if err != nil {
		return ctx, "", ext, nil, false, err
	}
	ctx = user.InjectOrgID(ctx, tenant)
	all, err := storepb.MatchersToPromMatchers(pbms...)
	if err != nil {
		return ctx, "", ext, nil, false, status.Errorf(codes.InvalidArgument, "invalid matchers: %v", err)
	}
	ext = labels.EmptyLabels()
	if s.opts.ExternalLabels != nil {
		ext = s.opts.ExternalLabels(tenant)
	}
	ms = make([]*labels.Matcher, 0, len(all))
	for _, m := range all {
		if ext.Has(m.Name) {
			if !m.Matches(ext.Get(m.Name)) {
				return ctx, tenant, ext, nil, false, nil
			}
			continue
		}
		ms = append(ms, m)
	}
	return ctx, tenant, ext, ms, true, nil
}

func (s *Server) querier(ctx context.Context, tenant string, mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := s.src(ctx, tenant)
	if err != nil {
		return nil, toStatus(fmt.Errorf("open tenant %q: %w", tenant, err))
	}
	if q == nil {
		return nil, nil
	}
	cq, err := q.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, toStatus(fmt.Errorf("open querier for tenant %q: %w", tenant, err))
	}
	return cq, nil
}

// Series implements storepb.StoreServer.
func (s *Server) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	ctx, tenant, ext, ms, ok, err := s.prepare(srv.Context(), req.Matchers)
	if err != nil || !ok {
		return err
	}
	q, err := s.querier(ctx, tenant, req.MinTime, req.MaxTime)
	if err != nil || q == nil {
		return err
	}
	defer q.Close()

	hints := selectHints(req)
	if len(ms) == 0 {
		// Select needs at least one matcher (label calls do not); every series has a name.
		ms = append(ms, labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+"))
	}
	set := q.Select(ctx, true, hints, ms...)
	// Messages are marshalled by Send before it returns, so the series, label and chunk
	// buffers are reused for the next message instead of allocated per series.
	var (
		sent   int64
		chkIt  chunks.Iterator
		w      = newSeriesWriter(srv, req.ResponseBatchSize)
		series *storepb.Series
	)
	for set.Next() {
		s := set.At()
		lset := s.Labels()
		if !ext.IsEmpty() {
			lset = labelpb.ExtendSortedLabels(lset, ext)
		}
		series = w.next()
		lset.Range(func(l labels.Label) {
			series.Labels = append(series.Labels, labelpb.ZLabel{Name: l.Name, Value: l.Value})
		})
		if !req.SkipChunks {
			chkIt = s.Iterator(chkIt)
			for chkIt.Next() {
				meta := chkIt.At()
				enc, err := encodingToPB(meta.Chunk.Encoding())
				if err != nil {
					return status.Errorf(codes.Internal, "series %s: %v", lset, err)
				}
				series.Chunks = append(series.Chunks, storepb.AggrChunk{
					MinTime: meta.MinTime,
					MaxTime: meta.MaxTime,
					Raw:     w.chunk(enc, meta.Chunk.Bytes()),
				})
			}
			if err := chkIt.Err(); err != nil {
				return toStatus(fmt.Errorf("read chunks of %s: %w", lset, err))
			}
			if len(series.Chunks) == 0 {
				// Series whose chunks all lie outside the range carry no data: skip them
				// like Prometheus' own queriers do.
				continue // next() reuses the series' slot
			}
		}
		if err := w.add(); err != nil {
			return err
		}
		sent++
		if req.Limit > 0 && sent >= req.Limit {
			break
		}
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := set.Err(); err != nil {
		return toStatus(fmt.Errorf("select series: %w", err))
	}
	for _, w := range set.Warnings().AsErrors() {
		if err := srv.Send(storepb.NewWarnSeriesResponse(w)); err != nil {
			return fmt.Errorf("send warning: %w", err)
		}
	}
	return nil
}

// selectHints passes the engine's hints through, so a source can, for example, skip
// chunks for series-only calls or read less for a known step and range.
//
// Trimming is disabled: chunks go out whole, as stored, like every Thanos store sends them.
// A trimming TSDB chunk querier re-encodes each chunk that reaches past the range, and the
// head's open chunk always does (the head index gives it an unbounded max time), so every
// head series cost a sample-by-sample decode and re-encode. Samples outside the range are
// harmless to PromQL, which selects each window's samples by timestamp itself.
func selectHints(req *storepb.SeriesRequest) *storage.SelectHints {
	h := &storage.SelectHints{Start: req.MinTime, End: req.MaxTime, Step: req.Step, Range: req.Range, Limit: int(req.Limit), DisableTrimming: true}
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

// LabelNames implements storepb.StoreServer.
func (s *Server) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	ctx, tenant, ext, ms, ok, err := s.prepare(ctx, req.Matchers)
	if err != nil {
		return nil, err
	}
	resp := &storepb.LabelNamesResponse{}
	if !ok {
		return resp, nil
	}
	q, err := s.querier(ctx, tenant, req.Start, req.End)
	if err != nil || q == nil {
		return resp, err
	}
	defer q.Close()
	names, warns, err := q.LabelNames(ctx, &storage.LabelHints{Limit: int(req.Limit)}, ms...)
	if err != nil {
		return nil, toStatus(fmt.Errorf("label names: %w", err))
	}
	if len(names) > 0 {
		ext.Range(func(l labels.Label) { names = append(names, l.Name) })
		slices.Sort(names)
		names = slices.Compact(names)
	}
	if req.Limit > 0 && int64(len(names)) > req.Limit {
		names = names[:req.Limit]
	}
	resp.Names = names
	for _, w := range warns.AsErrors() {
		resp.Warnings = append(resp.Warnings, w.Error())
	}
	return resp, nil
}

// LabelValues implements storepb.StoreServer.
func (s *Server) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if req.Label == "" {
		return nil, status.Error(codes.InvalidArgument, "label name parameter cannot be empty")
	}
	ctx, tenant, ext, ms, ok, err := s.prepare(ctx, req.Matchers)
	if err != nil {
		return nil, err
	}
	resp := &storepb.LabelValuesResponse{}
	if !ok {
		return resp, nil
	}
	q, err := s.querier(ctx, tenant, req.Start, req.End)
	if err != nil || q == nil {
		return resp, err
	}
	defer q.Close()
	if ext.Has(req.Label) {
		// The external value exists only if the tenant has some matching data.
		names, _, err := q.LabelNames(ctx, &storage.LabelHints{Limit: 1}, ms...)
		if err != nil {
			return nil, toStatus(fmt.Errorf("label names: %w", err))
		}
		if len(names) > 0 {
			resp.Values = []string{ext.Get(req.Label)}
		}
		return resp, nil
	}
	vals, warns, err := q.LabelValues(ctx, req.Label, &storage.LabelHints{Limit: int(req.Limit)}, ms...)
	if err != nil {
		return nil, toStatus(fmt.Errorf("label values of %q: %w", req.Label, err))
	}
	// The TSDB treats the limit as a hint (the head ignores it without matchers).
	if req.Limit > 0 && int64(len(vals)) > req.Limit {
		vals = vals[:req.Limit]
	}
	resp.Values = vals
	for _, w := range warns.AsErrors() {
		resp.Warnings = append(resp.Warnings, w.Error())
	}
	return resp, nil
}

// maxBatchBytes bounds the chunk data of one batched message, far below gRPC message limits.
const maxBatchBytes = 1 << 20

// seriesWriter sends series one per message, or batchSize per SeriesBatch message when the
// client asked for batches (SeriesRequest.ResponseBatchSize), reusing every buffer across
// messages.
type seriesWriter struct {
	srv       storepb.Store_SeriesServer
	batchSize int
	batch     []*storepb.Series // series of the pending message; batch[n] is being built
	n         int
	chunks    []storepb.Chunk // Raw chunk headers of the pending message
	bytes     int             // chunk bytes of the pending message
	single    storepb.SeriesResponse_Series
	batched   storepb.SeriesResponse_Batch
	resp      storepb.SeriesResponse
}

func newSeriesWriter(srv storepb.Store_SeriesServer, batchSize int64) *seriesWriter {
	w := &seriesWriter{srv: srv, batchSize: 1}
	if batchSize > 1 {
		w.batchSize = int(min(batchSize, 1024))
		w.batched.Batch = &storepb.SeriesBatch{}
	}
	return w
}

// next returns an empty series to fill; add sends it, calling next again discards it.
func (w *seriesWriter) next() *storepb.Series {
	if w.n == len(w.batch) {
		w.batch = append(w.batch, &storepb.Series{})
	}
	s := w.batch[w.n]
	s.Labels, s.Chunks = s.Labels[:0], s.Chunks[:0]
	return s
}

// chunk returns a Raw chunk header valid until the pending message is sent.
func (w *seriesWriter) chunk(enc storepb.Chunk_Encoding, data []byte) *storepb.Chunk {
	if len(w.chunks) == cap(w.chunks) {
		// Never grow in place: earlier headers of the pending message point into it.
		w.chunks = make([]storepb.Chunk, 0, max(64, 2*cap(w.chunks)))
	}
	w.chunks = append(w.chunks, storepb.Chunk{Type: enc, Data: data})
	w.bytes += len(data)
	return &w.chunks[len(w.chunks)-1]
}

// add completes the series being built and sends the pending message if it is full.
func (w *seriesWriter) add() error {
	w.n++
	if w.n >= w.batchSize || w.bytes >= maxBatchBytes {
		return w.flush()
	}
	return nil
}

func (w *seriesWriter) flush() error {
	if w.n == 0 {
		return nil
	}
	if w.batchSize == 1 {
		w.single.Series = w.batch[0]
		w.resp.Result = &w.single
	} else {
		w.batched.Batch.Series = w.batch[:w.n]
		w.resp.Result = &w.batched
	}
	err := w.srv.Send(&w.resp)
	w.n, w.bytes = 0, 0
	w.chunks = w.chunks[:0]
	if err != nil {
		return fmt.Errorf("send series: %w", err)
	}
	return nil
}

func encodingToPB(e chunkenc.Encoding) (storepb.Chunk_Encoding, error) {
	switch e {
	case chunkenc.EncXOR:
		return storepb.Chunk_XOR, nil
	case chunkenc.EncHistogram:
		return storepb.Chunk_HISTOGRAM, nil
	case chunkenc.EncFloatHistogram:
		return storepb.Chunk_FLOAT_HISTOGRAM, nil
	default:
		return 0, fmt.Errorf("unsupported chunk encoding %s", e)
	}
}

// EncodingFromPB maps a StoreAPI chunk type to the Prometheus chunk encoding.
func EncodingFromPB(e storepb.Chunk_Encoding) (chunkenc.Encoding, error) {
	switch e {
	case storepb.Chunk_XOR:
		return chunkenc.EncXOR, nil
	case storepb.Chunk_HISTOGRAM:
		return chunkenc.EncHistogram, nil
	case storepb.Chunk_FLOAT_HISTOGRAM:
		return chunkenc.EncFloatHistogram, nil
	default:
		return 0, fmt.Errorf("unsupported StoreAPI chunk type %s", e)
	}
}

// toStatus keeps gRPC statuses and context errors recognisable on the client side.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}
