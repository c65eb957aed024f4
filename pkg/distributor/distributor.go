// Package distributor is Vigil's metrics write path: it accepts Prometheus
// remote write (1.0 and 2.0) and OTLP metrics, resolves the tenant, validates
// series and applies per-tenant limits, then shards series over the ingester
// ring and replicates them with a write quorum.
package distributor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/ring"
	ringclient "github.com/grafana/dskit/ring/client"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ingclient "github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/util/logutil"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// RingKey is the KV key under which ingesters register.
const RingKey = "ingester"

// IngesterPusher is what the distributor needs from an ingester client. The
// clients its pool factory returns must implement it
// (pkg/ingester/client.IngesterClient does).
type IngesterPusher interface {
	Push(ctx context.Context, req *prompb.WriteRequest, opts ...grpc.CallOption) (*ingclient.PushResponse, error)
}

// Distributor validates, limits, shards and replicates writes. It is a dskit
// service: start it before serving its handlers.
type Distributor struct {
	services.Service

	cfg       Config
	overrides *validation.Overrides
	logger    *slog.Logger

	ring        *ring.Ring
	pool        *ringclient.Pool
	subservices *services.Manager
	watcher     *services.FailureWatcher

	limiters *rateLimiters
	metrics  *metrics
	now      func() time.Time
}

// New creates a distributor reading the ingester ring from ringKV (the
// memberlist KV client in Vigil) and connecting to ingesters through
// clientFactory (ingclient.NewPoolFactory in production).
func New(cfg Config, overrides *validation.Overrides, ringKV kv.Client, clientFactory ringclient.PoolFactory, reg prometheus.Registerer, logger *slog.Logger) (*Distributor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid distributor config: %w", err)
	}
	if overrides == nil {
		return nil, errors.New("distributor needs per-tenant overrides")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}

	ringCfg := ring.Config{
		HeartbeatTimeout:     cfg.HeartbeatTimeout,
		ReplicationFactor:    cfg.ReplicationFactor,
		ZoneAwarenessEnabled: cfg.ZoneAwarenessEnabled,
	}
	// The querier reads the same ring with the same metric names; label ours
	// so both can share one registry.
	ringReg := prometheus.WrapRegistererWith(prometheus.Labels{"component": "distributor"}, reg)
	r, err := ring.NewWithStoreClientAndStrategy(ringCfg, RingKey, RingKey, ringKV, ring.NewDefaultReplicationStrategy(), ringReg, logutil.GoKit(logger))
	if err != nil {
		return nil, fmt.Errorf("create ingester ring client: %w", err)
	}

	clientsGauge := promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name: "vigil_distributor_ingester_clients",
		Help: "Number of ingester clients the distributor holds.",
	})
	pool := ringclient.NewPool("ingester", ringclient.PoolConfig{
		CheckInterval:      15 * time.Second,
		HealthCheckEnabled: true,
		HealthCheckTimeout: time.Second,
	}, ringclient.NewRingServiceDiscovery(r), clientFactory, clientsGauge, logutil.GoKit(logger))

	d := &Distributor{
		cfg:       cfg,
		overrides: overrides,
		logger:    logger,
		ring:      r,
		pool:      pool,
		limiters:  newRateLimiters(),
		metrics:   newMetrics(reg),
		now:       time.Now,
	}
	d.subservices, err = services.NewManager(r, pool)
	if err != nil {
		return nil, fmt.Errorf("create distributor subservices: %w", err)
	}
	d.watcher = services.NewFailureWatcher()
	d.watcher.WatchManager(d.subservices)
	d.Service = services.NewBasicService(d.starting, d.running, d.stopping)
	return d, nil
}

func (d *Distributor) starting(ctx context.Context) error {
	if err := services.StartManagerAndAwaitHealthy(ctx, d.subservices); err != nil {
		return fmt.Errorf("start ingester ring client and pool: %w", err)
	}
	return nil
}

func (d *Distributor) running(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-d.watcher.Chan():
		return fmt.Errorf("distributor subservice failed: %w", err)
	}
}

func (d *Distributor) stopping(error) error {
	return services.StopManagerAndAwaitStopped(context.Background(), d.subservices)
}

// Ring is the ingester ring as the distributor sees it (e.g. for a status page).
func (d *Distributor) Ring() *ring.Ring { return d.ring }

// PushMetrics writes req for the tenant in ctx (dskit user.InjectOrgID) with
// the same validation and limits as the HTTP write endpoints. req is modified
// in place (labels sorted, invalid data removed) and must not be modified or
// reused after the call: with replication, pushes to replicas beyond the
// write quorum may still be reading it. A *PushError tells the caller what to
// answer; the PushResult says what was written either way.
func (d *Distributor) PushMetrics(ctx context.Context, req *prompb.WriteRequest) (PushResult, error) {
	tenant, err := user.ExtractOrgID(ctx)
	if err != nil {
		return PushResult{}, &PushError{Code: http.StatusUnauthorized, Msg: "no tenant in the request context", Err: err}
	}
	return d.push(ctx, tenant, req)
}

func countRequest(req *prompb.WriteRequest) (samples, histograms, exemplars int) {
	for i := range req.Timeseries {
		samples += len(req.Timeseries[i].Samples)
		histograms += len(req.Timeseries[i].Histograms)
		exemplars += len(req.Timeseries[i].Exemplars)
	}
	return
}

func (d *Distributor) push(ctx context.Context, tenant string, req *prompb.WriteRequest) (PushResult, error) {
	now := d.now()
	samples, histograms, exemplars := countRequest(req)
	d.metrics.received(tenant, samples, histograms, exemplars, len(req.Metadata))

	// Rate limiting comes first and refuses the whole request: 429 is
	// retried by Prometheus and OTel exporters, so nothing is lost, while a
	// partial accept would make the retry write duplicates.
	if n := samples + histograms + exemplars; n > 0 {
		if ok, retryAfter := d.limiters.reserve(tenant, d.overrides.IngestionRate(tenant), d.overrides.IngestionBurstSize(tenant), n, now); !ok {
			d.metrics.discard(tenant, ReasonRateLimited, samples+histograms, exemplars)
			return PushResult{}, d.rateLimitError(tenant, n, retryAfter)
		}
	}

	lim := newSeriesLimits(d.overrides, tenant, now)
	var rej rejections
	validateRequest(req, &lim, &rej)
	for _, r := range rej.list {
		d.metrics.discard(tenant, r.Reason, r.Samples+r.Histograms, r.Exemplars)
	}

	var res PushResult
	if len(req.Timeseries) > 0 || len(req.Metadata) > 0 {
		res.Samples, res.Histograms, res.Exemplars = countRequest(req)
		res.Metadata = len(req.Metadata)
		responses, err := d.send(ctx, tenant, req)
		if err != nil {
			// A 4xx will not be retried: the data is dropped and must be
			// counted. A 5xx is retried by the sender, so nothing is lost.
			if StatusCode(err)/100 == 4 {
				d.metrics.discard(tenant, ReasonIngesterRefused, res.Samples+res.Histograms, res.Exemplars)
			}
			return PushResult{Rejections: rej.list}, err
		}
		d.applyIngesterRejections(tenant, req, responses, &res, &rej)
	}
	res.Rejections = rej.list
	if writeFailed(res) {
		return res, partialError(res)
	}
	return res, nil
}

// writeFailed decides between 2xx and a partial-write 400 once everything refused is in
// res.Rejections: any refusal fails the write except those failsWrite lets pass, and those
// pass only if something of the request was written. A 2xx with nothing written reads to
// a remote write 2.0 sender as "this receiver ignored the request"; the 400 says why.
func writeFailed(res PushResult) bool {
	soft := 0
	for i := range res.Rejections {
		if failsWrite(res.Rejections[i].Reason) {
			return true
		}
		soft++
	}
	return soft > 0 && res.Samples+res.Histograms+res.Exemplars == 0
}

func (d *Distributor) rateLimitError(tenant string, n int, retryAfter time.Duration) *PushError {
	rate, burst := d.overrides.IngestionRate(tenant), d.overrides.IngestionBurstSize(tenant)
	var detail string
	if n > burst {
		detail = fmt.Sprintf("the request has %d samples, histograms and exemplars, more than the burst size of %d; it can never be accepted, send smaller requests", n, burst)
	} else {
		detail = fmt.Sprintf("ingestion rate limit of %g samples/s with burst %d exceeded for tenant %q (request of %d samples, histograms and exemplars); retry after %s", rate, burst, tenant, n, retryAfter)
	}
	return &PushError{
		Code:       http.StatusTooManyRequests,
		RetryAfter: retryAfter,
		Msg:        fmt.Sprintf("%s (reason: %s). %s", detail, ReasonRateLimited, howToRaise(ReasonRateLimited)),
	}
}

// shardToken is fnv32a(tenant + sorted labels), so a series always lands on
// the same ingesters and tenants with identical series spread differently.
// The hash is written out to avoid allocating a hash.Hash per series.
func shardToken(tenant string, ls []prompb.Label) uint32 {
	h := fnvAdd(offset32, tenant)
	for _, l := range ls {
		h = fnvAddByte(h, 0xff)
		h = fnvAdd(h, l.Name)
		h = fnvAddByte(h, 0xff)
		h = fnvAdd(h, l.Value)
	}
	return h
}

// metadataToken places a metric family's metadata by tenant and family name.
func metadataToken(tenant, family string) uint32 {
	return fnvAdd(fnvAddByte(fnvAdd(offset32, tenant), 0xfe), family)
}

const (
	offset32 = 2166136261
	prime32  = 16777619
)

func fnvAdd(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= prime32
	}
	return h
}

func fnvAddByte(h uint32, b byte) uint32 {
	h ^= uint32(b)
	h *= prime32
	return h
}

// instanceResponse is one ingester's answer for the items it was sent.
type instanceResponse struct {
	resp *ingclient.PushResponse
}

// send shards req over the ring and pushes to ingesters, succeeding once
// every series reached its write quorum.
func (d *Distributor) send(ctx context.Context, tenant string, req *prompb.WriteRequest) ([]instanceResponse, error) {
	nSeries := len(req.Timeseries)
	// When the ring has no more instances than the replication factor (one
	// ingester with RF 1, three with RF 3) and zones play no part, every key
	// maps to the same replication set: all instances. Then one key stands for
	// the whole request, which goes to each instance as it is, instead of
	// hashing every series, looking each one up in the ring and copying it
	// into per-instance sub-requests. Quorum, error and cleanup handling are
	// the ring's as for any key. (If an instance joins meanwhile, this request
	// goes where the ring pointed a moment ago, as with any in-flight write.)
	uniform := !d.cfg.ZoneAwarenessEnabled && d.ring.InstancesCount() <= d.cfg.ReplicationFactor
	var keys []uint32
	if uniform {
		keys = []uint32{0}
	} else {
		keys = make([]uint32, nSeries+len(req.Metadata))
		for i := range req.Timeseries {
			keys[i] = shardToken(tenant, req.Timeseries[i].Labels)
		}
		for i := range req.Metadata {
			keys[nSeries+i] = metadataToken(tenant, req.Metadata[i].MetricFamilyName)
		}
	}

	// Pushes to the replicas beyond quorum continue after we answer, so
	// they must not be cancelled with the client's request.
	pushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RemoteTimeout)
	pushCtx = user.InjectOrgID(pushCtx, tenant)
	cleanup := cancel
	if bufs := rwBuffersFrom(ctx); bufs != nil {
		// req lives in reused buffers: keep them until every push returned
		// (the ring calls Cleanup exactly once, after all of them).
		bufs.acquire()
		cleanup = func() { cancel(); bufs.release() }
	}

	var (
		mu        sync.Mutex
		responses []instanceResponse
	)
	err := ring.DoBatchWithOptions(ctx, ring.Write, d.ring, keys, func(inst ring.InstanceDesc, indexes []int) error {
		// Ingesters only read what they are sent, so replicas may share it.
		sub := req
		if !uniform {
			sub = &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, len(indexes))}
			for _, i := range indexes {
				if i < nSeries {
					sub.Timeseries = append(sub.Timeseries, req.Timeseries[i])
				} else {
					sub.Metadata = append(sub.Metadata, req.Metadata[i-nSeries])
				}
			}
		}
		c, err := d.pool.GetClientForInstance(inst)
		if err != nil {
			return fmt.Errorf("get client for ingester %s (%s): %w", inst.Id, inst.Addr, err)
		}
		pusher, ok := c.(IngesterPusher)
		if !ok {
			return fmt.Errorf("client for ingester %s is a %T, not an IngesterPusher", inst.Addr, c)
		}
		resp, err := pusher.Push(pushCtx, sub)
		d.metrics.ingesterPushes.WithLabelValues(pushOutcome(err)).Inc()
		if err != nil {
			return fmt.Errorf("push to ingester %s (%s): %w", inst.Id, inst.Addr, err)
		}
		mu.Lock()
		responses = append(responses, instanceResponse{resp: resp})
		mu.Unlock()
		return nil
	}, ring.DoBatchOptions{Cleanup: cleanup, IsClientError: isClientError})
	if err != nil {
		return nil, d.ingesterError(err)
	}
	mu.Lock()
	out := append([]instanceResponse(nil), responses...)
	mu.Unlock()
	return out, nil
}

func pushOutcome(err error) string {
	if err == nil {
		return "success"
	}
	if isClientError(err) {
		return "client_error"
	}
	return "server_error"
}

// isClientError classifies ingester errors for the quorum logic: a request
// that a quorum refused as malformed must be answered with 4xx (not retried),
// anything else is the server's problem (5xx, retried).
func isClientError(err error) bool {
	s, ok := status.FromError(errors.Unwrap(err))
	if !ok {
		s, ok = status.FromError(err)
	}
	if !ok {
		return false
	}
	switch s.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.ResourceExhausted:
		return true
	}
	return false
}

func (d *Distributor) ingesterError(err error) *PushError {
	if isClientError(err) {
		return &PushError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("the ingesters refused the request: %v", err), Err: err}
	}
	code := http.StatusInternalServerError
	if s, ok := status.FromError(errors.Unwrap(err)); ok && (s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded) {
		code = http.StatusServiceUnavailable
	}
	if errors.Is(err, ring.ErrEmptyRing) || errors.Is(err, ring.ErrTooManyUnhealthyInstances) || errors.Is(err, context.DeadlineExceeded) || d.ring.InstancesCount() == 0 {
		code = http.StatusServiceUnavailable
	}
	d.logger.Warn("push to ingesters failed", "err", err)
	return &PushError{Code: code, Msg: fmt.Sprintf("writing to the ingesters failed, retry later: %v", err), Err: err}
}

// applyIngesterRejections folds the ingesters' per-series refusals into the
// result. With replication several ingesters report the same refusal, so
// refusals are merged by (reason, series): summed within one ingester's answer
// (a request may carry a series in several entries, as Prometheus' queue
// manager does with one entry per sample and per exemplar), and the largest
// of those sums across replicas.
func (d *Distributor) applyIngesterRejections(tenant string, req *prompb.WriteRequest, responses []instanceResponse, res *PushResult, rej *rejections) {
	type agg struct {
		r     ingclient.Rejection
		count int64
		// resp and sum are the response being summed and its sum so far.
		resp int
		sum  int64
	}
	var merged map[string]*agg
	var order []string
	res.Metadata = 0
	rf := 0
	for respIdx, ir := range responses {
		if ir.resp == nil {
			continue
		}
		res.Metadata += int(ir.resp.MetadataWritten)
		rf++
		for _, r := range ir.resp.Rejections {
			key := r.Reason + "\xff" + r.Series
			if merged == nil {
				merged = map[string]*agg{}
			}
			a, ok := merged[key]
			if !ok {
				a = &agg{r: r, resp: respIdx}
				merged[key] = a
				order = append(order, key)
			}
			if a.resp != respIdx {
				a.resp, a.sum = respIdx, 0
			}
			a.sum += r.Count
			a.count = max(a.count, a.sum)
		}
	}
	// Metadata is replicated too; report families, not copies.
	if rf > 0 && d.cfg.ReplicationFactor > 1 {
		res.Metadata = min(res.Metadata, len(req.Metadata))
	}
	if len(merged) == 0 {
		return
	}

	// Attribute each refusal to samples, histograms or exemplars by what the
	// series carries, so the RW 2.0 "written" headers stay truthful.
	bySeries := make(map[string]*prompb.TimeSeries, len(req.Timeseries))
	var b labels.ScratchBuilder
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		bySeries[ts.ToLabels(&b, nil).String()] = ts
	}
	for _, key := range order {
		a := merged[key]
		n := int(a.count)
		var s, h, e int
		ts := bySeries[a.r.Series]
		switch {
		case isExemplarReason(a.r.Reason):
			// The series' samples were stored; only exemplars were refused.
			e = n
		case a.r.Reason == ReasonInvalidHistogram:
			h = n
		case ts != nil && len(ts.Samples) == 0 && len(ts.Histograms) > 0:
			h = min(n, len(ts.Histograms))
			e = n - h
		case ts != nil:
			s = min(n, len(ts.Samples)+len(ts.Histograms))
			if len(ts.Histograms) > 0 && s > len(ts.Samples) {
				h = s - len(ts.Samples)
				s = len(ts.Samples)
			}
			e = n - s - h
		default:
			s = n
		}
		res.Samples = max(0, res.Samples-s)
		res.Histograms = max(0, res.Histograms-h)
		res.Exemplars = max(0, res.Exemplars-e)
		detail := a.r.Message
		if detail == "" {
			detail = "refused by the ingester"
		}
		series := a.r.Series
		if ts != nil {
			series = seriesString(ts.Labels)
		}
		rej.add(a.r.Reason, series, detail, s, h, e)
		d.metrics.discard(tenant, a.r.Reason, s+h, e)
		if !failsWrite(a.r.Reason) {
			d.logger.Debug("exemplars refused by the ingesters; the write does not fail for them", "tenant", tenant, "reason", a.r.Reason, "series", series, "exemplars", e)
		}
	}
}
