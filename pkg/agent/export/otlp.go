package export

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SpanKind of an observed request.
type SpanKind uint8

const (
	SpanKindClient SpanKind = iota
	SpanKindServer
)

// Span is one observed request. Attributes follow OpenTelemetry semantic
// conventions (http.request.method, db.system.name, ...).
type Span struct {
	ServiceName       string
	ServiceInstanceID string
	HostName          string
	Name              string
	Kind              SpanKind
	Start, End        time.Time
	Error             bool
	StatusMessage     string
	Attributes        []Attr
}

// OTLPConfig configures span export.
type OTLPConfig struct {
	Endpoint      string        `yaml:"endpoint"`
	Interval      time.Duration `yaml:"interval"`
	Timeout       time.Duration `yaml:"timeout"`
	MaxBatch      int           `yaml:"max_batch"`
	QueueCapacity int           `yaml:"queue_capacity"`
	MaxRetries    int           `yaml:"max_retries"`
	// Tenant is shared with remote write (-tenant).
	Tenant string `yaml:"-"`
}

// RegisterFlags registers the OTLP flags.
func (c *OTLPConfig) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Endpoint, "otlp.endpoint", "", "OTLP/HTTP base URL for spans, e.g. http://vigil:9009/otlp (spans go to <endpoint>/v1/traces). Empty disables span export.")
	f.DurationVar(&c.Interval, "otlp.interval", 5*time.Second, "How often buffered spans are sent.")
	f.DurationVar(&c.Timeout, "otlp.timeout", 10*time.Second, "Timeout of one OTLP request.")
	f.IntVar(&c.MaxBatch, "otlp.max-batch", 1000, "Spans per OTLP request.")
	f.IntVar(&c.QueueCapacity, "otlp.queue-capacity", 20000, "Spans buffered in memory; new spans are dropped beyond it.")
	f.IntVar(&c.MaxRetries, "otlp.max-retries", 5, "Retries of a retryable failure before a batch is dropped.")
}

// SpanExporter buffers spans and sends them as OTLP/HTTP protobuf.
type SpanExporter struct {
	cfg    OTLPConfig
	url    string
	client *http.Client
	logger *slog.Logger

	mu sync.Mutex
	// queue holds the spans not yet sent, already encoded (see spanQueue).
	queue spanQueue
	wake  chan struct{}

	sent    prometheus.Counter
	dropped *prometheus.CounterVec
}

// NewSpanExporter returns an exporter; call Run to start sending.
func NewSpanExporter(cfg OTLPConfig, logger *slog.Logger, reg prometheus.Registerer) (*SpanExporter, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("OTLP endpoint is empty")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.QueueCapacity <= 0 {
		cfg.QueueCapacity = 20000
	}
	url := strings.TrimSuffix(cfg.Endpoint, "/")
	if !strings.HasSuffix(url, "/v1/traces") {
		url += "/v1/traces"
	}
	e := &SpanExporter{
		cfg: cfg, url: url, logger: logger,
		client: &http.Client{Timeout: cfg.Timeout},
		wake:   make(chan struct{}, 1),
		queue:  newSpanQueue(),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_agent_spans_sent_total", Help: "Spans accepted by the OTLP endpoint.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_spans_dropped_total", Help: "Spans dropped, by reason (queue_full, rejected, retries_exhausted).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.sent, e.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering OTLP metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Add queues a span; it never blocks. The span is encoded at once, so Add
// keeps nothing of s: callers may reuse its Attributes.
func (e *SpanExporter) Add(s *Span) {
	e.mu.Lock()
	if e.queue.spans >= e.cfg.QueueCapacity {
		e.mu.Unlock()
		e.dropped.WithLabelValues("queue_full").Inc()
		return
	}
	e.queue.add(s)
	full := e.queue.spans >= e.cfg.MaxBatch
	e.mu.Unlock()
	if full {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// Run sends batches every interval (or when a batch is full) until ctx is
// done, then flushes once.
func (e *SpanExporter) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), e.cfg.Timeout)
			e.flush(fctx, false)
			cancel()
			return
		case <-t.C:
		case <-e.wake:
		}
		e.flush(ctx, true)
	}
}

// Flush sends everything buffered now (used by tests and shutdown).
func (e *SpanExporter) Flush(ctx context.Context) { e.flush(ctx, true) }

func (e *SpanExporter) flush(ctx context.Context, retry bool) {
	for {
		e.mu.Lock()
		// About 300 bytes per span: one allocation for most batches.
		body, n := e.queue.take(make([]byte, 0, 320*min(e.queue.spans, e.cfg.MaxBatch)), e.cfg.MaxBatch)
		e.mu.Unlock()
		if n == 0 {
			return
		}
		e.sendWithRetry(ctx, body, n, retry)
	}
}

func (e *SpanExporter) sendWithRetry(ctx context.Context, body []byte, spans int, retry bool) {
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := e.post(ctx, body)
		if err == nil {
			e.sent.Add(float64(spans))
			return
		}
		var perm errPermanent
		if errors.As(err, &perm) {
			e.logger.Warn("OTLP export rejected; dropping spans", "err", err, "spans", spans)
			e.dropped.WithLabelValues("rejected").Add(float64(spans))
			return
		}
		if !retry || attempt >= e.cfg.MaxRetries {
			e.logger.Warn("OTLP export failed; dropping spans", "err", err, "spans", spans)
			e.dropped.WithLabelValues("retries_exhausted").Add(float64(spans))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			e.dropped.WithLabelValues("retries_exhausted").Add(float64(spans))
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (e *SpanExporter) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return errPermanent{fmt.Errorf("building OTLP request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "vigil-agent")
	if e.cfg.Tenant != "" {
		req.Header.Set("X-Scope-OrgID", e.cfg.Tenant)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting spans to %s: %w", e.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5:
		return fmt.Errorf("OTLP export to %s: %s: %s", e.url, resp.Status, bytes.TrimSpace(msg))
	default:
		return errPermanent{fmt.Errorf("OTLP export to %s: %s: %s", e.url, resp.Status, bytes.TrimSpace(msg))}
	}
}
