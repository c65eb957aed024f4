// Package receiver is the distributor side of Vigil's trace write path. It
// accepts spans over OTLP (gRPC and HTTP, protobuf and JSON), Zipkin v2
// (JSON and proto3) and the Jaeger gRPC collector API, resolves the tenant,
// applies per-tenant limits, feeds the derived-metrics generator and shards
// the spans by trace ID over the ingester ring, replicating with a write
// quorum. Ingesters receive the spans through the OTLP gRPC TraceService.
package receiver

import (
	"flag"
	"fmt"
	"time"
)

// Config configures the trace receivers.
type Config struct {
	// MultiTenancyEnabled is shared with the metrics write path; the lead
	// copies the global flag here rather than this package defining its own,
	// so there is one switch for the whole binary.
	MultiTenancyEnabled bool `yaml:"-"`

	// MaxRecvMsgSize bounds a request body after decompression, so a small
	// gzip bomb cannot make the distributor allocate gigabytes.
	MaxRecvMsgSize int `yaml:"max_recv_msg_size"`
	// RemoteTimeout bounds one push to the ingesters.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`
}

// RegisterFlags registers the receiver flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&c.MaxRecvMsgSize, "distributor.traces.max-recv-msg-size", 16<<20, "Maximum size in bytes of a decompressed trace write request (OTLP, Zipkin, Jaeger). Larger requests are rejected with 413.")
	f.DurationVar(&c.RemoteTimeout, "distributor.traces.remote-timeout", 5*time.Second, "Timeout for pushing spans to ingesters.")
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.MaxRecvMsgSize <= 0 {
		return fmt.Errorf("distributor.traces.max-recv-msg-size: must be positive, got %d", c.MaxRecvMsgSize)
	}
	if c.RemoteTimeout <= 0 {
		return fmt.Errorf("distributor.traces.remote-timeout: must be positive, got %s", c.RemoteTimeout)
	}
	return nil
}

// Limits are the per-tenant span limits the receiver enforces. The
// validation package's Overrides implements it; declared here because the
// consumer owns its interfaces.
type Limits interface {
	IngestionRateSpans(tenant string) float64
	IngestionBurstSizeSpans(tenant string) int
	MaxSpanBytes(tenant string) int
	MaxAttributesPerSpan(tenant string) int
}

// Flag names quoted in rejection messages so users know what to raise.
// They match pkg/util/validation (kept as literals to avoid importing the
// producer of the interface above).
const (
	flagRateSpans     = "distributor.ingestion-rate-limit-spans"
	flagBurstSpans    = "distributor.ingestion-burst-size-spans"
	flagMaxSpanBytes  = "validation.max-span-bytes"
	flagMaxAttributes = "validation.max-attributes-per-span"
	flagMaxRecvMsg    = "distributor.traces.max-recv-msg-size"
	// Enforced by the ingesters (pkg/tracestore), quoted when they refuse.
	flagMaxSpansPerTrace = "ingester.max-spans-per-trace"
	flagMaxBytesPerTrace = "ingester.max-bytes-per-trace"
)
