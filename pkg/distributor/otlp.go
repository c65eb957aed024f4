package distributor

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	prw "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// ReasonOTLPTranslation counts OTLP metrics the Prometheus translator could
// not convert (e.g. delta temporality, empty data points); one per metric.
const ReasonOTLPTranslation = "otlp_translation_failed"

const targetInfoMetric = "target_info"

const (
	otlpProtoContentType = "application/x-protobuf"
	otlpJSONContentType  = "application/json"
)

// otlpSettings reproduces what Prometheus' own OTLP receiver passes to the
// translator with its default configuration (translation strategy
// UnderscoreEscapingWithSuffixes, target_info on, no resource attributes
// promoted, delta temporality refused), adjusted by OTLPConfig.
func (d *Distributor) otlpSettings() prw.Settings {
	promCfg := config.DefaultOTLPConfig
	promCfg.PromoteAllResourceAttributes = d.cfg.OTLP.PromoteAllResourceAttributes
	promCfg.PromoteResourceAttributes = d.cfg.OTLP.PromoteResourceAttributes
	return prw.Settings{
		AddMetricSuffixes:                    promCfg.TranslationStrategy.ShouldAddSuffixes(),
		AllowUTF8:                            !promCfg.TranslationStrategy.ShouldEscape(),
		PromoteResourceAttributes:            prw.NewPromoteResourceAttributes(promCfg),
		KeepIdentifyingResourceAttributes:    d.cfg.OTLP.KeepIdentifyingResourceAttributes,
		ConvertHistogramsToNHCB:              d.cfg.OTLP.ConvertHistogramsToNHCB,
		PromoteScopeMetadata:                 d.cfg.OTLP.PromoteScopeMetadata,
		AllowDeltaTemporality:                d.cfg.OTLP.NativeDeltaIngestion,
		LookbackDelta:                        d.cfg.OTLP.LookbackDelta,
		LabelNameUnderscoreSanitization:      promCfg.LabelNameUnderscoreSanitization,
		LabelNamePreserveMultipleUnderscores: promCfg.LabelNamePreserveMultipleUnderscores,
	}
}

// convertOTLP translates OTLP metrics into a remote-write request. Metrics
// the translator refuses are reported in errs; the rest is still returned.
func (d *Distributor) convertOTLP(ctx context.Context, md pmetric.Metrics) (*prompb.WriteRequest, []error) {
	app := newWriteRequestAppender()
	conv := prw.NewPrometheusConverter(app)
	_, err := conv.FromMetrics(ctx, md, d.otlpSettings())
	var errs []error
	if err != nil {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
	}
	return app.req, errs
}

// pushOTLP converts and pushes, turning translation failures into
// rejections alongside the distributor's own.
func (d *Distributor) pushOTLP(ctx context.Context, tenantID string, md pmetric.Metrics) (PushResult, error) {
	req, convErrs := d.convertOTLP(ctx, md)
	res, err := d.push(ctx, tenantID, req)
	if len(convErrs) == 0 {
		return res, err
	}
	var pe *PushError
	if err != nil && (!errors.As(err, &pe) || pe.Code != http.StatusBadRequest) {
		return res, err // rate limited or ingesters down: that answer wins
	}
	d.metrics.discard(tenantID, ReasonOTLPTranslation, len(convErrs), 0)
	for _, ce := range convErrs {
		res.Rejections = append(res.Rejections, Rejection{
			Reason:  ReasonOTLPTranslation,
			Message: fmt.Sprintf("OTLP metric could not be translated to Prometheus series: %v (reason: %s).", ce, ReasonOTLPTranslation),
			Samples: 1,
		})
	}
	return res, partialError(res)
}

// writeRequestAppender is a storage.AppenderV2 collecting the translator's
// output into a prompb.WriteRequest, merging appends to the same series.
type writeRequestAppender struct {
	req      *prompb.WriteRequest
	byHash   map[uint64][]int
	families map[string]struct{}
}

func newWriteRequestAppender() *writeRequestAppender {
	return &writeRequestAppender{
		req:      &prompb.WriteRequest{},
		byHash:   map[uint64][]int{},
		families: map[string]struct{}{},
	}
}

func (a *writeRequestAppender) series(ls labels.Labels) *prompb.TimeSeries {
	h := ls.Hash()
	for _, i := range a.byHash[h] {
		ts := &a.req.Timeseries[i]
		if labelsEqual(ts.Labels, ls) {
			return ts
		}
	}
	a.byHash[h] = append(a.byHash[h], len(a.req.Timeseries))
	a.req.Timeseries = append(a.req.Timeseries, prompb.TimeSeries{Labels: prompb.FromLabels(ls, nil)})
	return &a.req.Timeseries[len(a.req.Timeseries)-1]
}

func labelsEqual(pl []prompb.Label, ls labels.Labels) bool {
	if len(pl) != ls.Len() {
		return false
	}
	i := 0
	equal := true
	ls.Range(func(l labels.Label) {
		if equal && (pl[i].Name != l.Name || pl[i].Value != l.Value) {
			equal = false
		}
		i++
	})
	return equal
}

// maxTargetInfoSamples bounds the target_info samples the translator
// synthesizes per resource. It emits one every lookback-delta/2 between the
// resource's earliest and latest data point, so one request with data points
// decades apart would otherwise expand into millions of samples.
const maxTargetInfoSamples = 1000

// Append implements storage.AppenderV2.
func (a *writeRequestAppender) Append(_ storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	ts := a.series(ls)
	if len(ts.Samples) >= maxTargetInfoSamples && ls.Get(model.MetricNameLabel) == targetInfoMetric {
		return 0, fmt.Errorf("target_info for resource %s would need more than %d samples: the resource's data points span too long a time range", ls.String(), maxTargetInfoSamples)
	}
	switch {
	case fh != nil:
		ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(t, fh))
	case h != nil:
		ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(t, h))
	default:
		ts.Samples = append(ts.Samples, prompb.Sample{Value: v, Timestamp: t})
	}
	for _, e := range opts.Exemplars {
		ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{Labels: prompb.FromLabels(e.Labels, nil), Value: e.Value, Timestamp: e.Ts})
	}
	if opts.MetricFamilyName != "" && !opts.Metadata.IsEmpty() {
		if _, ok := a.families[opts.MetricFamilyName]; !ok {
			// The family name's bytes are only valid during this call.
			family := strings.Clone(opts.MetricFamilyName)
			a.families[family] = struct{}{}
			a.req.Metadata = append(a.req.Metadata, prompb.MetricMetadata{
				Type:             prompb.FromMetadataType(opts.Metadata.Type),
				MetricFamilyName: family,
				Help:             opts.Metadata.Help,
				Unit:             opts.Metadata.Unit,
			})
		}
	}
	return storage.SeriesRef(len(a.req.Timeseries)), nil
}

// Commit implements storage.AppenderV2; the request is pushed by the caller.
func (*writeRequestAppender) Commit() error { return nil }

// Rollback implements storage.AppenderV2.
func (*writeRequestAppender) Rollback() error { return nil }

// OTLPMetricsHandler serves OTLP/HTTP metrics export (protobuf or JSON,
// optionally gzip). Mount it at /v1/metrics on the OTLP HTTP port;
// RegisterHTTP mounts it at /otlp/v1/metrics.
func (d *Distributor) OTLPMetricsHandler() http.Handler {
	return d.withTenant(http.HandlerFunc(d.serveOTLP))
}

func (d *Distributor) serveOTLP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
		return
	}
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mediaType != otlpProtoContentType && mediaType != otlpJSONContentType && mediaType != "application/protobuf") {
		http.Error(w, fmt.Sprintf("unsupported Content-Type %q; OTLP/HTTP accepts %s and %s", r.Header.Get("Content-Type"), otlpProtoContentType, otlpJSONContentType), http.StatusUnsupportedMediaType)
		return
	}
	isJSON := mediaType == otlpJSONContentType
	tenantID := tenantOf(r.Context())

	body, code, err := d.readOTLPBody(r, tenantID)
	if err != nil {
		writeOTLPError(w, isJSON, code, err.Error())
		return
	}
	req := pmetricotlp.NewExportRequest()
	if isJSON {
		err = req.UnmarshalJSON(body)
	} else {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		writeOTLPError(w, isJSON, http.StatusBadRequest, fmt.Sprintf("decode OTLP metrics export request (%s): %v", mediaType, err))
		return
	}

	_, err = d.pushOTLP(r.Context(), tenantID, req.Metrics())
	if err != nil {
		var pe *PushError
		if errors.As(err, &pe) && pe.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(pe.RetryAfter.Seconds()))))
		}
		writeOTLPError(w, isJSON, StatusCode(err), err.Error())
		return
	}
	resp := pmetricotlp.NewExportResponse()
	var out []byte
	if isJSON {
		out, err = resp.MarshalJSON()
	} else {
		out, err = resp.MarshalProto()
	}
	if err != nil {
		http.Error(w, fmt.Sprintf("encode OTLP response: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", mediaType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// readOTLPBody reads the body within the tenant's size limit, before and
// after gzip decompression (a small gzip body can inflate enormously).
func (d *Distributor) readOTLPBody(r *http.Request, tenantID string) ([]byte, int, error) {
	limit := d.overrides.MaxRecvMsgSize(tenantID)
	var raw bytes.Buffer
	if err := readBody(r.Body, r.ContentLength, limit, &raw); err != nil {
		var tl errTooLarge
		if errors.As(err, &tl) {
			return nil, http.StatusRequestEntityTooLarge, err
		}
		return nil, http.StatusBadRequest, err
	}
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
		return raw.Bytes(), 0, nil
	case "gzip":
		gr, err := gzip.NewReader(&raw)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("body is not valid gzip: %w", err)
		}
		var out bytes.Buffer
		if err := readBody(gr, -1, limit, &out); err != nil {
			var tl errTooLarge
			if errors.As(err, &tl) {
				return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("%w after gzip decompression", err)
			}
			return nil, http.StatusBadRequest, fmt.Errorf("body is not valid gzip: %w", err)
		}
		return out.Bytes(), 0, nil
	default:
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Encoding %q is not supported; use gzip or none", enc)
	}
}

// writeOTLPError answers with a google.rpc.Status body in the request's
// encoding, as the OTLP/HTTP specification requires for 4xx and 5xx.
func writeOTLPError(w http.ResponseWriter, isJSON bool, code int, msg string) {
	st := &spb.Status{Code: int32(grpcCodeForHTTP(code)), Message: msg}
	var (
		out []byte
		err error
		ct  string
	)
	if isJSON {
		out, err = protojson.Marshal(st)
		ct = otlpJSONContentType
	} else {
		out, err = proto.Marshal(st)
		ct = otlpProtoContentType
	}
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

func grpcCodeForHTTP(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusUnsupportedMediaType:
		return codes.InvalidArgument
	}
	if code >= 500 {
		return codes.Internal
	}
	return codes.Unknown
}

// RegisterOTLPGRPC registers the OTLP gRPC MetricsService (port 4317).
func (d *Distributor) RegisterOTLPGRPC(s *grpc.Server) {
	pmetricotlp.RegisterGRPCServer(s, &otlpGRPC{d: d})
}

type otlpGRPC struct {
	pmetricotlp.UnimplementedGRPCServer
	d *Distributor
}

// grpcTenant reads the tenant from X-Scope-OrgID (or THANOS-TENANT) metadata,
// or from a context a dskit user-header interceptor already filled.
func (d *Distributor) grpcTenant(ctx context.Context) (string, error) {
	if !d.cfg.MultiTenancyEnabled {
		return tenant.Default, nil
	}
	id := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, h := range []string{tenant.OrgIDHeader, tenant.ThanosHeader} {
			if v := md.Get(h); len(v) > 0 && v[0] != "" {
				id = v[0]
				break
			}
		}
	}
	if id == "" {
		if fromCtx, err := user.ExtractOrgID(ctx); err == nil {
			id = fromCtx
		}
	}
	if id == "" {
		return "", status.Error(codes.Unauthenticated, tenant.ErrMissing.Error())
	}
	if err := tenant.Validate(id); err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	return id, nil
}

// Export implements pmetricotlp.GRPCServer.
func (g *otlpGRPC) Export(ctx context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	tenantID, err := g.d.grpcTenant(ctx)
	if err != nil {
		return pmetricotlp.NewExportResponse(), err
	}
	ctx = user.InjectOrgID(ctx, tenantID)
	_, err = g.d.pushOTLP(ctx, tenantID, req.Metrics())
	if err != nil {
		st := status.New(grpcCodeForHTTP(StatusCode(err)), err.Error())
		// OTLP exporters retry ResourceExhausted only when the server says
		// when (RetryInfo); without it a rate-limited batch would be dropped.
		var pe *PushError
		if errors.As(err, &pe) && pe.RetryAfter > 0 {
			if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(pe.RetryAfter)}); derr == nil {
				st = withInfo
			}
		}
		return pmetricotlp.NewExportResponse(), st.Err()
	}
	return pmetricotlp.NewExportResponse(), nil
}
