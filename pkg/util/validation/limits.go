// Package validation holds Vigil's per-tenant limits: their defaults (flags and
// YAML), per-tenant overrides loaded from a runtime file that is reloaded
// without a restart, and the accessors every component uses to read them.
package validation

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Limits are the per-tenant limits. The defaults come from flags/YAML; each
// tenant may override any subset of them in the runtime configuration file.
//
// A zero value disables a limit unless its documentation says otherwise.
type Limits struct {
	// Metrics write path (distributor).
	IngestionRate      float64 `yaml:"ingestion_rate"`
	IngestionBurstSize int     `yaml:"ingestion_burst_size"`
	MaxRecvMsgSize     int     `yaml:"max_recv_msg_size"`

	// Series validation (distributor).
	MaxLabelNameLength     int           `yaml:"max_label_name_length"`
	MaxLabelValueLength    int           `yaml:"max_label_value_length"`
	MaxLabelNamesPerSeries int           `yaml:"max_label_names_per_series"`
	CreationGracePeriod    time.Duration `yaml:"creation_grace_period"`
	PastGracePeriod        time.Duration `yaml:"past_grace_period"`

	// Series and sample limits enforced where series are created (ingester).
	MaxGlobalSeriesPerUser   int           `yaml:"max_global_series_per_user"`
	MaxGlobalSeriesPerMetric int           `yaml:"max_global_series_per_metric"`
	OutOfOrderTimeWindow     time.Duration `yaml:"out_of_order_time_window"`

	// Traces write path.
	IngestionRateSpans      float64 `yaml:"ingestion_rate_spans"`
	IngestionBurstSizeSpans int     `yaml:"ingestion_burst_size_spans"`
	MaxSpanBytes            int     `yaml:"max_span_bytes"`
	MaxAttributesPerSpan    int     `yaml:"max_attributes_per_span"`
	MaxSpansPerTrace        int     `yaml:"max_spans_per_trace"`
	MaxBytesPerTrace        int     `yaml:"max_bytes_per_trace"`
}

// Flag names, exported so that error messages elsewhere can tell users which
// flag (or per-tenant override) raises the limit they hit.
const (
	FlagIngestionRate            = "distributor.ingestion-rate-limit"
	FlagIngestionBurstSize       = "distributor.ingestion-burst-size"
	FlagMaxRecvMsgSize           = "distributor.max-recv-msg-size"
	FlagMaxLabelNameLength       = "validation.max-length-label-name"
	FlagMaxLabelValueLength      = "validation.max-length-label-value"
	FlagMaxLabelNamesPerSeries   = "validation.max-label-names-per-series"
	FlagCreationGracePeriod      = "validation.create-grace-period"
	FlagPastGracePeriod          = "validation.past-grace-period"
	FlagMaxGlobalSeriesPerUser   = "ingester.max-global-series-per-user"
	FlagMaxGlobalSeriesPerMetric = "ingester.max-global-series-per-metric"
	FlagOutOfOrderTimeWindow     = "ingester.out-of-order-time-window"
	FlagIngestionRateSpans       = "distributor.ingestion-rate-limit-spans"
	FlagIngestionBurstSizeSpans  = "distributor.ingestion-burst-size-spans"
	FlagMaxSpanBytes             = "validation.max-span-bytes"
	FlagMaxAttributesPerSpan     = "validation.max-attributes-per-span"
	FlagMaxSpansPerTrace         = "ingester.max-spans-per-trace"
	FlagMaxBytesPerTrace         = "ingester.max-bytes-per-trace"
)

// RegisterFlags registers the default limits.
//
// The defaults are sized for a small team on one node: generous enough that a
// single Prometheus with a few hundred thousand series is not throttled, small
// enough that one runaway client cannot exhaust a single binary's memory.
func (l *Limits) RegisterFlags(f *flag.FlagSet) {
	f.Float64Var(&l.IngestionRate, FlagIngestionRate, 100000, "Per-tenant ingestion rate limit in samples (and exemplars, histograms) per second, enforced by each distributor on what it receives. 0 disables the limit.")
	f.IntVar(&l.IngestionBurstSize, FlagIngestionBurstSize, 1000000, "Per-tenant allowed ingestion burst size in samples. Must be at least as large as the biggest single request.")
	f.IntVar(&l.MaxRecvMsgSize, FlagMaxRecvMsgSize, 100<<20, "Maximum size in bytes of a write request body (compressed, as received). Larger requests are refused with 413.")

	f.IntVar(&l.MaxLabelNameLength, FlagMaxLabelNameLength, 1024, "Maximum length in bytes of a label name. 0 disables the check.")
	f.IntVar(&l.MaxLabelValueLength, FlagMaxLabelValueLength, 2048, "Maximum length in bytes of a label value. 0 disables the check.")
	f.IntVar(&l.MaxLabelNamesPerSeries, FlagMaxLabelNamesPerSeries, 30, "Maximum number of labels (including __name__) per series. 0 disables the check.")
	f.DurationVar(&l.CreationGracePeriod, FlagCreationGracePeriod, 10*time.Minute, "Samples with timestamps further than this in the future are rejected. 0 disables the check.")
	f.DurationVar(&l.PastGracePeriod, FlagPastGracePeriod, 0, "Samples with timestamps further than this in the past are rejected by the distributor. 0 disables the check (the ingester still refuses samples older than its head allows).")

	f.IntVar(&l.MaxGlobalSeriesPerUser, FlagMaxGlobalSeriesPerUser, 150000, "Maximum number of in-memory series per tenant, across all ingesters: each ingester enforces its share, limit * replication factor / healthy ingesters in the ring (never more than the limit, never less than 1). 0 disables the limit.")
	f.IntVar(&l.MaxGlobalSeriesPerMetric, FlagMaxGlobalSeriesPerMetric, 0, "Maximum number of in-memory series per metric name per tenant, across all ingesters: each ingester enforces its share, limit * replication factor / healthy ingesters in the ring (never more than the limit, never less than 1). 0 disables the limit.")
	f.DurationVar(&l.OutOfOrderTimeWindow, FlagOutOfOrderTimeWindow, 0, "How far back an out-of-order sample may be accepted into the head. 0 refuses out-of-order samples.")

	f.Float64Var(&l.IngestionRateSpans, FlagIngestionRateSpans, 20000, "Per-tenant ingestion rate limit in spans per second, enforced by each distributor on what it receives. 0 disables the limit.")
	f.IntVar(&l.IngestionBurstSizeSpans, FlagIngestionBurstSizeSpans, 200000, "Per-tenant allowed burst in spans.")
	f.IntVar(&l.MaxSpanBytes, FlagMaxSpanBytes, 1<<20, "Maximum size in bytes of a single span (protobuf encoding). 0 disables the check.")
	f.IntVar(&l.MaxAttributesPerSpan, FlagMaxAttributesPerSpan, 256, "Maximum number of attributes per span. 0 disables the check.")
	f.IntVar(&l.MaxSpansPerTrace, FlagMaxSpansPerTrace, 50000, "Maximum number of spans per trace held by an ingester. 0 disables the limit.")
	f.IntVar(&l.MaxBytesPerTrace, FlagMaxBytesPerTrace, 50<<20, "Maximum size in bytes of a trace held by an ingester. 0 disables the limit.")
}

// Validate reports the first invalid limit, naming its YAML key, so that a bad
// config fails at start with a message the user can act on.
func (l *Limits) Validate() error {
	var errs []error
	nonNegInt := func(key string, v int) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", key, v))
		}
	}
	nonNegDur := func(key string, v time.Duration) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", key, v))
		}
	}
	if l.IngestionRate < 0 {
		errs = append(errs, fmt.Errorf("ingestion_rate: must not be negative, got %g", l.IngestionRate))
	}
	if l.IngestionRateSpans < 0 {
		errs = append(errs, fmt.Errorf("ingestion_rate_spans: must not be negative, got %g", l.IngestionRateSpans))
	}
	nonNegInt("ingestion_burst_size", l.IngestionBurstSize)
	nonNegInt("max_recv_msg_size", l.MaxRecvMsgSize)
	nonNegInt("max_label_name_length", l.MaxLabelNameLength)
	nonNegInt("max_label_value_length", l.MaxLabelValueLength)
	nonNegInt("max_label_names_per_series", l.MaxLabelNamesPerSeries)
	nonNegDur("creation_grace_period", l.CreationGracePeriod)
	nonNegDur("past_grace_period", l.PastGracePeriod)
	nonNegInt("max_global_series_per_user", l.MaxGlobalSeriesPerUser)
	nonNegInt("max_global_series_per_metric", l.MaxGlobalSeriesPerMetric)
	nonNegDur("out_of_order_time_window", l.OutOfOrderTimeWindow)
	nonNegInt("ingestion_burst_size_spans", l.IngestionBurstSizeSpans)
	nonNegInt("max_span_bytes", l.MaxSpanBytes)
	nonNegInt("max_attributes_per_span", l.MaxAttributesPerSpan)
	nonNegInt("max_spans_per_trace", l.MaxSpansPerTrace)
	nonNegInt("max_bytes_per_trace", l.MaxBytesPerTrace)
	if l.IngestionRate > 0 && l.IngestionBurstSize == 0 {
		errs = append(errs, errors.New("ingestion_burst_size: must be positive when ingestion_rate is set, or every request would be refused"))
	}
	if l.IngestionRateSpans > 0 && l.IngestionBurstSizeSpans == 0 {
		errs = append(errs, errors.New("ingestion_burst_size_spans: must be positive when ingestion_rate_spans is set, or every request would be refused"))
	}
	return errors.Join(errs...)
}
