package distributor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"

	"github.com/golang/snappy"
	"github.com/grafana/dskit/user"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigil-obs/vigil/pkg/util/tenant"
)

// withTenant resolves the tenant before anything reads the body: 401 when
// multi-tenancy is on and none is given, 400 for an invalid ID.
func (d *Distributor) withTenant(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := tenant.FromHTTP(r, d.cfg.MultiTenancyEnabled)
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, tenant.ErrMissing) {
				code = http.StatusUnauthorized
			}
			http.Error(w, err.Error(), code)
			return
		}
		next.ServeHTTP(w, r.WithContext(user.InjectOrgID(r.Context(), id)))
	})
}

// tenantOf returns the tenant withTenant put into the context.
func tenantOf(ctx context.Context) string {
	id, err := user.ExtractOrgID(ctx)
	if err != nil {
		return tenant.Default
	}
	return id
}

// errTooLarge marks a body over the tenant's -distributor.max-recv-msg-size.
type errTooLarge struct{ size, limit int }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("request body of at least %d bytes exceeds the limit of %d bytes (-%s or per-tenant override \"max_recv_msg_size\")", e.size, e.limit, "distributor.max-recv-msg-size")
}

// readBody reads at most limit bytes (0 = unlimited) into buf.
func readBody(r io.Reader, contentLength int64, limit int, buf *bytes.Buffer) error {
	if limit > 0 && contentLength > int64(limit) {
		return errTooLarge{size: int(contentLength), limit: limit}
	}
	if contentLength > 0 && (limit == 0 || contentLength <= int64(limit)) {
		buf.Grow(int(contentLength))
	}
	src := r
	if limit > 0 {
		src = io.LimitReader(r, int64(limit)+1)
	}
	if _, err := buf.ReadFrom(src); err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if limit > 0 && buf.Len() > limit {
		return errTooLarge{size: buf.Len(), limit: limit}
	}
	return nil
}

// decodedBody carries the decompressed remote-write payload from the snappy
// middleware to Store without another copy.
type decodedBody struct {
	*bytes.Reader
	data []byte
	// bufs holds data (and is where Store decodes into); the middleware
	// releases its reference after the handler returned.
	bufs *rwBuffers
}

func (decodedBody) Close() error { return nil }

// rwDecodeMiddleware replaces client_golang's default snappy middleware: it
// answers 415 for an unknown Content-Type before reading the body, enforces
// the per-tenant size limit with 413 (on the compressed and the decoded
// size), and decodes snappy into a buffer Store can use directly.
func (d *Distributor) rwDecodeMiddleware(bufPool *sync.Pool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				next.ServeHTTP(w, r) // the write handler answers 405
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "" {
				if _, err := remoteapi.ParseProtoMsg(ct); err != nil {
					rwError(w, r, err.Error(), http.StatusUnsupportedMediaType)
					return
				}
			}
			if enc := r.Header.Get("Content-Encoding"); enc != "" && enc != string(remoteapi.SnappyBlockCompression) {
				rwError(w, r, fmt.Sprintf("Content-Encoding %q is not supported; remote write bodies must be snappy block-compressed", enc), http.StatusUnsupportedMediaType)
				return
			}
			limit := d.overrides.MaxRecvMsgSize(tenantOf(r.Context()))
			buf := bufPool.Get().(*bytes.Buffer)
			buf.Reset()
			defer bufPool.Put(buf)
			if err := readBody(r.Body, r.ContentLength, limit, buf); err != nil {
				var tl errTooLarge
				if errors.As(err, &tl) {
					rwError(w, r, err.Error(), http.StatusRequestEntityTooLarge)
					return
				}
				rwError(w, r, err.Error(), http.StatusBadRequest)
				return
			}
			n, err := snappy.DecodedLen(buf.Bytes())
			if err != nil {
				rwError(w, r, fmt.Sprintf("body is not snappy block-compressed: %v", err), http.StatusBadRequest)
				return
			}
			if limit > 0 && n > limit {
				rwError(w, r, errTooLarge{size: n, limit: limit}.Error()+" after snappy decompression", http.StatusRequestEntityTooLarge)
				return
			}
			bufs := getRWBuffers()
			defer bufs.release()
			decoded, err := snappy.Decode(bufs.body[:cap(bufs.body)], buf.Bytes())
			if err != nil {
				rwError(w, r, fmt.Sprintf("body is not snappy block-compressed: %v", err), http.StatusBadRequest)
				return
			}
			bufs.body = decoded
			r.Body = decodedBody{Reader: bytes.NewReader(decoded), data: decoded, bufs: bufs}
			r.Header.Del("Content-Encoding")
			next.ServeHTTP(w, r)
		})
	}
}

// rwError answers an error found before the request reached Store. Remote
// write 2.0 requires the written-counts headers on every response, errors
// included, so a 2.0 sender learns that nothing was written.
func rwError(w http.ResponseWriter, r *http.Request, msg string, code int) {
	if mt, err := remoteapi.ParseProtoMsg(r.Header.Get("Content-Type")); err == nil && mt == remoteapi.WriteV2MessageType {
		for _, h := range []string{"X-Prometheus-Remote-Write-Samples-Written", "X-Prometheus-Remote-Write-Histograms-Written", "X-Prometheus-Remote-Write-Exemplars-Written"} {
			w.Header().Set(h, "0")
		}
	}
	http.Error(w, msg, code)
}

// RemoteWriteHandler serves Prometheus remote write 1.0 and 2.0 (POST, snappy,
// Content-Type negotiation, X-Prometheus-Remote-Write-*-Written headers).
func (d *Distributor) RemoteWriteHandler() http.Handler {
	bufPool := &sync.Pool{New: func() any { return new(bytes.Buffer) }}
	h := remoteapi.NewWriteHandler(rwStore{d: d},
		remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType},
		remoteapi.WithWriteHandlerLogger(d.logger),
		remoteapi.WithWriteHandlerMiddlewares(d.rwDecodeMiddleware(bufPool)),
	)
	return d.withTenant(h)
}

type rwStore struct{ d *Distributor }

// Store implements client_golang's remote write storage interface.
func (s rwStore) Store(r *http.Request, msgType remoteapi.WriteMessageType) (*remoteapi.WriteResponse, error) {
	resp := remoteapi.NewWriteResponse()
	ctx := r.Context()
	var (
		body []byte
		bufs *rwBuffers
	)
	if db, ok := r.Body.(decodedBody); ok {
		body, bufs = db.data, db.bufs
	} else {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			resp.SetStatusCode(http.StatusBadRequest)
			return resp, fmt.Errorf("read request body: %w", err)
		}
		body = b
	}

	var req *prompb.WriteRequest
	switch msgType {
	case remoteapi.WriteV1MessageType:
		req = &prompb.WriteRequest{}
		// body is this request's own decompressed buffer, so labels may
		// point into it instead of being copied.
		var err error
		if bufs != nil {
			// Reused memory: send holds bufs until its pushes are done.
			err = unmarshalWriteRequestInto(body, req, &bufs.arena, bufs.series)
			if cap(req.Timeseries) > cap(bufs.series) {
				bufs.series = req.Timeseries[:0]
			}
			ctx = withRWBuffers(ctx, bufs)
		} else {
			err = unmarshalWriteRequestNoCopy(body, req)
		}
		if err != nil {
			resp.SetStatusCode(http.StatusBadRequest)
			return resp, fmt.Errorf("decode remote write 1.0 request (prometheus.WriteRequest): %w", err)
		}
	case remoteapi.WriteV2MessageType:
		var v2 writev2.Request
		if err := v2.Unmarshal(body); err != nil {
			resp.SetStatusCode(http.StatusBadRequest)
			return resp, fmt.Errorf("decode remote write 2.0 request (io.prometheus.write.v2.Request): %w", err)
		}
		var err error
		if req, err = convertV2(&v2); err != nil {
			resp.SetStatusCode(http.StatusBadRequest)
			return resp, fmt.Errorf("invalid remote write 2.0 request: %w", err)
		}
	default:
		resp.SetStatusCode(http.StatusUnsupportedMediaType)
		return resp, fmt.Errorf("unsupported message type %q", msgType)
	}

	res, err := s.d.push(ctx, tenantOf(ctx), req)
	resp.Samples, resp.Histograms, resp.Exemplars = res.Samples, res.Histograms, res.Exemplars
	if err != nil {
		var pe *PushError
		if errors.As(err, &pe) && pe.RetryAfter > 0 {
			resp.SetExtraHeader("Retry-After", strconv.Itoa(int(math.Ceil(pe.RetryAfter.Seconds()))))
		}
		resp.SetStatusCode(StatusCode(err))
		return resp, err
	}
	return resp, nil
}

// convertV2 turns a remote write 2.0 request into the v1 model the ingesters
// take: labels from the symbol table, samples, native histograms, exemplars,
// and one metadata entry per metric family. Every symbol reference is
// bounds-checked, because upstream helpers index without checking.
func convertV2(v2 *writev2.Request) (*prompb.WriteRequest, error) {
	syms := v2.Symbols
	if len(syms) > 0 && syms[0] != "" {
		return nil, errors.New("symbols table must start with an empty string")
	}
	sym := func(ref uint32) (string, error) {
		if int(ref) >= len(syms) {
			return "", fmt.Errorf("symbol reference %d outside of the symbols table (size %d)", ref, len(syms))
		}
		return syms[ref], nil
	}
	toLabels := func(refs []uint32) ([]prompb.Label, error) {
		if len(refs)%2 != 0 {
			return nil, fmt.Errorf("odd number of label references (%d)", len(refs))
		}
		out := make([]prompb.Label, 0, len(refs)/2)
		for i := 0; i < len(refs); i += 2 {
			n, err := sym(refs[i])
			if err != nil {
				return nil, err
			}
			v, err := sym(refs[i+1])
			if err != nil {
				return nil, err
			}
			out = append(out, prompb.Label{Name: n, Value: v})
		}
		return out, nil
	}

	req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, len(v2.Timeseries))}
	seenFamily := map[string]struct{}{}
	for i := range v2.Timeseries {
		ts := &v2.Timeseries[i]
		ls, err := toLabels(ts.LabelsRefs)
		if err != nil {
			return nil, fmt.Errorf("timeseries %d: %w", i, err)
		}
		out := prompb.TimeSeries{Labels: ls}
		if len(ts.Samples) > 0 {
			out.Samples = make([]prompb.Sample, len(ts.Samples))
			for j, s := range ts.Samples {
				out.Samples[j] = prompb.Sample{Value: s.Value, Timestamp: s.Timestamp}
			}
		}
		if len(ts.Histograms) > 0 {
			out.Histograms = make([]prompb.Histogram, len(ts.Histograms))
			for j, h := range ts.Histograms {
				if h.IsFloatHistogram() {
					out.Histograms[j] = prompb.FromFloatHistogram(h.Timestamp, h.ToFloatHistogram())
				} else {
					out.Histograms[j] = prompb.FromIntHistogram(h.Timestamp, h.ToIntHistogram())
				}
			}
		}
		if len(ts.Exemplars) > 0 {
			out.Exemplars = make([]prompb.Exemplar, len(ts.Exemplars))
			for j, e := range ts.Exemplars {
				els, err := toLabels(e.LabelsRefs)
				if err != nil {
					return nil, fmt.Errorf("timeseries %d exemplar %d: %w", i, j, err)
				}
				out.Exemplars[j] = prompb.Exemplar{Labels: els, Value: e.Value, Timestamp: e.Timestamp}
			}
		}
		req.Timeseries = append(req.Timeseries, out)

		if ts.Metadata.Type == writev2.Metadata_METRIC_TYPE_UNSPECIFIED && ts.Metadata.HelpRef == 0 && ts.Metadata.UnitRef == 0 {
			continue
		}
		help, err := sym(ts.Metadata.HelpRef)
		if err != nil {
			return nil, fmt.Errorf("timeseries %d metadata help: %w", i, err)
		}
		unit, err := sym(ts.Metadata.UnitRef)
		if err != nil {
			return nil, fmt.Errorf("timeseries %d metadata unit: %w", i, err)
		}
		typ := v2MetricType(ts.Metadata.Type)
		family := metricFamily(ls, typ)
		if family == "" {
			continue
		}
		if _, ok := seenFamily[family]; ok {
			continue
		}
		seenFamily[family] = struct{}{}
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			Type:             prompb.FromMetadataType(typ),
			MetricFamilyName: family,
			Help:             help,
			Unit:             unit,
		})
	}
	return req, nil
}

func v2MetricType(t writev2.Metadata_MetricType) model.MetricType {
	switch t {
	case writev2.Metadata_METRIC_TYPE_COUNTER:
		return model.MetricTypeCounter
	case writev2.Metadata_METRIC_TYPE_GAUGE:
		return model.MetricTypeGauge
	case writev2.Metadata_METRIC_TYPE_HISTOGRAM:
		return model.MetricTypeHistogram
	case writev2.Metadata_METRIC_TYPE_GAUGEHISTOGRAM:
		return model.MetricTypeGaugeHistogram
	case writev2.Metadata_METRIC_TYPE_SUMMARY:
		return model.MetricTypeSummary
	case writev2.Metadata_METRIC_TYPE_INFO:
		return model.MetricTypeInfo
	case writev2.Metadata_METRIC_TYPE_STATESET:
		return model.MetricTypeStateset
	}
	return model.MetricTypeUnknown
}

// metricFamily derives the family a series belongs to, as Prometheus' scrape
// metadata names it: classic histogram and summary series carry suffixes
// that are not part of the family name.
func metricFamily(ls []prompb.Label, typ model.MetricType) string {
	name := ""
	for _, l := range ls {
		if l.Name == model.MetricNameLabel {
			name = l.Value
			break
		}
	}
	var suffixes []string
	switch typ {
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
		suffixes = []string{"_bucket", "_sum", "_count"}
	case model.MetricTypeSummary:
		suffixes = []string{"_sum", "_count"}
	}
	for _, s := range suffixes {
		if len(name) > len(s) && name[len(name)-len(s):] == s {
			return name[:len(name)-len(s)]
		}
	}
	return name
}
