// Package export ships the agent's data to Vigil (or any compatible
// backend): metrics with Prometheus remote write 1.0, spans with OTLP/HTTP.
package export

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/prompb"
)

// RemoteWriteConfig configures the remote-write client.
type RemoteWriteConfig struct {
	URL                 string        `yaml:"url"`
	Tenant              string        `yaml:"tenant"`
	Interval            time.Duration `yaml:"interval"`
	Timeout             time.Duration `yaml:"timeout"`
	MaxSeriesPerRequest int           `yaml:"max_series_per_request"`
	QueueCapacity       int           `yaml:"queue_capacity"`
	MinBackoff          time.Duration `yaml:"min_backoff"`
	MaxBackoff          time.Duration `yaml:"max_backoff"`
	MaxRetries          int           `yaml:"max_retries"`
}

// RegisterFlags registers the remote-write flags.
func (c *RemoteWriteConfig) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.URL, "remote-write.url", "", "Prometheus remote-write endpoint, e.g. http://vigil:9009/api/v1/push. Empty disables metric export.")
	f.StringVar(&c.Tenant, "tenant", "", "Tenant sent as X-Scope-OrgID on every request (remote write and OTLP). Empty sends no tenant header.")
	f.DurationVar(&c.Interval, "remote-write.interval", 15*time.Second, "How often metrics are snapshotted and sent.")
	f.DurationVar(&c.Timeout, "remote-write.timeout", 10*time.Second, "Timeout of one remote-write request.")
	f.IntVar(&c.MaxSeriesPerRequest, "remote-write.max-series-per-request", 2000, "Series per remote-write request.")
	f.IntVar(&c.QueueCapacity, "remote-write.queue-capacity", 64, "Requests buffered while the endpoint is unavailable; the oldest are dropped beyond it.")
	f.DurationVar(&c.MinBackoff, "remote-write.min-backoff", 100*time.Millisecond, "First retry delay.")
	f.DurationVar(&c.MaxBackoff, "remote-write.max-backoff", 10*time.Second, "Maximum retry delay.")
	f.IntVar(&c.MaxRetries, "remote-write.max-retries", 10, "Retries of a retryable failure before the request is dropped.")
}

func (c *RemoteWriteConfig) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = 15 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxSeriesPerRequest <= 0 {
		c.MaxSeriesPerRequest = 2000
	}
	if c.QueueCapacity <= 0 {
		c.QueueCapacity = 64
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
}

// RemoteWriter sends batches of series with retries. Enqueue never blocks:
// when the queue is full the oldest request is dropped (newer snapshots of
// cumulative metrics supersede older ones, so the newest data is kept).
type RemoteWriter struct {
	cfg    RemoteWriteConfig
	client *http.Client
	logger *slog.Logger

	mu     sync.Mutex
	queue  [][]byte // snappy-compressed WriteRequests
	wake   chan struct{}
	closed bool

	requests *prometheus.CounterVec
	series   prometheus.Counter
	dropped  *prometheus.CounterVec
}

// NewRemoteWriter returns a writer; call Run to start sending.
func NewRemoteWriter(cfg RemoteWriteConfig, logger *slog.Logger, reg prometheus.Registerer) (*RemoteWriter, error) {
	if cfg.URL == "" {
		return nil, errors.New("remote-write URL is empty")
	}
	cfg.setDefaults()
	w := &RemoteWriter{
		cfg:    cfg,
		client: &http.Client{Timeout: cfg.Timeout},
		logger: logger,
		wake:   make(chan struct{}, 1),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_remote_write_requests_total",
			Help: "Remote-write requests by result (success, retry, failed).",
		}, []string{"result"}),
		series: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_agent_remote_write_series_total",
			Help: "Series successfully sent with remote write.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_remote_write_dropped_requests_total",
			Help: "Remote-write requests dropped, by reason (queue_full, rejected, retries_exhausted).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{w.requests, w.series, w.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering remote-write metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Enqueue splits series into requests and queues them.
func (w *RemoteWriter) Enqueue(series []prompb.TimeSeries) error {
	for start := 0; start < len(series); start += w.cfg.MaxSeriesPerRequest {
		end := min(start+w.cfg.MaxSeriesPerRequest, len(series))
		req := &prompb.WriteRequest{Timeseries: series[start:end]}
		raw, err := req.Marshal()
		if err != nil {
			return fmt.Errorf("marshalling write request: %w", err)
		}
		body := snappy.Encode(nil, raw)
		w.mu.Lock()
		if len(w.queue) >= w.cfg.QueueCapacity {
			w.queue = w.queue[1:]
			w.dropped.WithLabelValues("queue_full").Inc()
		}
		w.queue = append(w.queue, body)
		w.mu.Unlock()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// QueueLen is the number of requests waiting to be sent.
func (w *RemoteWriter) QueueLen() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue)
}

// Run sends queued requests until ctx is done, then makes one last attempt
// to flush what is queued (without retries).
func (w *RemoteWriter) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.flushOnce()
			return
		case <-w.wake:
		}
		for {
			body := w.pop()
			if body == nil {
				break
			}
			w.sendWithRetry(ctx, body)
		}
	}
}

func (w *RemoteWriter) pop() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return nil
	}
	b := w.queue[0]
	w.queue = w.queue[1:]
	return b
}

func (w *RemoteWriter) flushOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	for body := w.pop(); body != nil; body = w.pop() {
		if _, err := w.send(ctx, body); err != nil {
			w.logger.Warn("final remote-write flush failed", "err", err)
			return
		}
	}
}

// errPermanent marks responses that retrying cannot fix (4xx other than 429).
type errPermanent struct{ error }

func (w *RemoteWriter) sendWithRetry(ctx context.Context, body []byte) {
	backoff := w.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		n, err := w.send(ctx, body)
		if err == nil {
			w.requests.WithLabelValues("success").Inc()
			w.series.Add(float64(n))
			return
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			w.requests.WithLabelValues("failed").Inc()
			w.dropped.WithLabelValues("rejected").Inc()
			w.logger.Warn("remote write rejected; dropping request", "err", err)
			return
		}
		if attempt >= w.cfg.MaxRetries {
			w.requests.WithLabelValues("failed").Inc()
			w.dropped.WithLabelValues("retries_exhausted").Inc()
			w.logger.Warn("remote write failed; retries exhausted, dropping request", "err", err, "attempts", attempt+1)
			return
		}
		w.requests.WithLabelValues("retry").Inc()
		w.logger.Debug("remote write failed; retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			// Put it back so the final flush can try once more.
			w.mu.Lock()
			w.queue = append([][]byte{body}, w.queue...)
			w.mu.Unlock()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

func (w *RemoteWriter) send(ctx context.Context, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errPermanent{fmt.Errorf("building remote-write request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "vigil-agent")
	if w.cfg.Tenant != "" {
		req.Header.Set("X-Scope-OrgID", w.cfg.Tenant)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("posting to %s: %w", w.cfg.URL, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch {
	case resp.StatusCode/100 == 2:
		return countSeries(body), nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5:
		return 0, fmt.Errorf("remote write to %s: %s: %s", w.cfg.URL, resp.Status, bytes.TrimSpace(msg))
	default:
		return 0, errPermanent{fmt.Errorf("remote write to %s: %s: %s", w.cfg.URL, resp.Status, bytes.TrimSpace(msg))}
	}
}

func countSeries(body []byte) int {
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return 0
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return 0
	}
	return len(req.Timeseries)
}

// LabelFunc may add labels to a series at conversion time; it receives the
// metric name and the series' labels.
type LabelFunc func(name string, lbls []prompb.Label) []prompb.Label

// FromGatherer snapshots g into remote-write series stamped with ts. Classic
// histograms become _bucket/_sum/_count series as Prometheus exposes them.
// extra may add labels (e.g. host_name, peer_service); it may be nil.
func FromGatherer(g prometheus.Gatherer, ts time.Time, extra LabelFunc) ([]prompb.TimeSeries, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering metrics: %w", err)
	}
	ms := ts.UnixMilli()
	var out []prompb.TimeSeries
	add := func(name string, base []prompb.Label, extraName, extraValue string, v float64) {
		lbls := make([]prompb.Label, 0, len(base)+2)
		lbls = append(lbls, prompb.Label{Name: "__name__", Value: name})
		lbls = append(lbls, base...)
		if extraName != "" {
			lbls = append(lbls, prompb.Label{Name: extraName, Value: extraValue})
		}
		sort.Slice(lbls, func(i, j int) bool { return lbls[i].Name < lbls[j].Name })
		out = append(out, prompb.TimeSeries{Labels: lbls, Samples: []prompb.Sample{{Value: v, Timestamp: ms}}})
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			base := make([]prompb.Label, 0, len(m.GetLabel())+4)
			for _, lp := range m.GetLabel() {
				base = append(base, prompb.Label{Name: lp.GetName(), Value: lp.GetValue()})
			}
			if extra != nil {
				base = extra(name, base)
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, base, "", "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, base, "", "", m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, base, "", "", m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", base, "le", formatFloat(b.GetUpperBound()), float64(b.GetCumulativeCount()))
				}
				add(name+"_bucket", base, "le", "+Inf", float64(h.GetSampleCount()))
				add(name+"_sum", base, "", "", h.GetSampleSum())
				add(name+"_count", base, "", "", float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, base, "quantile", formatFloat(q.GetQuantile()), q.GetValue())
				}
				add(name+"_sum", base, "", "", s.GetSampleSum())
				add(name+"_count", base, "", "", float64(s.GetSampleCount()))
			}
		}
	}
	return out, nil
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
