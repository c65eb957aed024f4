package validation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"go.yaml.in/yaml/v3"
)

// TenantLimits returns the limits of one tenant, or nil when the tenant has no
// overrides and the defaults apply.
type TenantLimits interface {
	ByTenant(tenant string) *Limits
}

// Overrides answers "what is limit X for tenant T": the tenant's override when
// there is one, the default otherwise. It is safe for concurrent use as long as
// the TenantLimits it was given is.
type Overrides struct {
	defaults     Limits
	tenantLimits TenantLimits
}

// NewOverrides returns Overrides over defaults and, optionally (nil is fine),
// per-tenant limits.
func NewOverrides(defaults Limits, tenantLimits TenantLimits) (*Overrides, error) {
	if err := defaults.Validate(); err != nil {
		return nil, fmt.Errorf("invalid default limits: %w", err)
	}
	return &Overrides{defaults: defaults, tenantLimits: tenantLimits}, nil
}

func (o *Overrides) limits(tenant string) *Limits {
	if o.tenantLimits != nil {
		if l := o.tenantLimits.ByTenant(tenant); l != nil {
			return l
		}
	}
	return &o.defaults
}

// Limits returns a copy of all limits that apply to tenant.
func (o *Overrides) Limits(tenant string) Limits { return *o.limits(tenant) }

// IngestionRate is the sample rate limit (samples/s; 0 = unlimited).
func (o *Overrides) IngestionRate(tenant string) float64 { return o.limits(tenant).IngestionRate }

// IngestionBurstSize is the sample burst size of the rate limiter.
func (o *Overrides) IngestionBurstSize(tenant string) int {
	return o.limits(tenant).IngestionBurstSize
}

// MaxRecvMsgSize is the maximum accepted write request body in bytes (0 = unlimited).
func (o *Overrides) MaxRecvMsgSize(tenant string) int { return o.limits(tenant).MaxRecvMsgSize }

// MaxLabelNameLength is the maximum label name length in bytes (0 = unlimited).
func (o *Overrides) MaxLabelNameLength(tenant string) int {
	return o.limits(tenant).MaxLabelNameLength
}

// MaxLabelValueLength is the maximum label value length in bytes (0 = unlimited).
func (o *Overrides) MaxLabelValueLength(tenant string) int {
	return o.limits(tenant).MaxLabelValueLength
}

// MaxLabelNamesPerSeries is the maximum number of labels per series (0 = unlimited).
func (o *Overrides) MaxLabelNamesPerSeries(tenant string) int {
	return o.limits(tenant).MaxLabelNamesPerSeries
}

// CreationGracePeriod is how far in the future a sample may be (0 = unchecked).
func (o *Overrides) CreationGracePeriod(tenant string) time.Duration {
	return o.limits(tenant).CreationGracePeriod
}

// PastGracePeriod is how far in the past a sample may be (0 = unchecked).
func (o *Overrides) PastGracePeriod(tenant string) time.Duration {
	return o.limits(tenant).PastGracePeriod
}

// MaxSeriesPerTenant is the global in-memory series limit of a tenant (0 = unlimited).
func (o *Overrides) MaxSeriesPerTenant(tenant string) int {
	return o.limits(tenant).MaxGlobalSeriesPerUser
}

// MaxSeriesPerMetric is the global in-memory series limit per metric name (0 = unlimited).
func (o *Overrides) MaxSeriesPerMetric(tenant string) int {
	return o.limits(tenant).MaxGlobalSeriesPerMetric
}

// OutOfOrderTimeWindow is the tenant's TSDB out-of-order window (0 = no OOO).
func (o *Overrides) OutOfOrderTimeWindow(tenant string) time.Duration {
	return o.limits(tenant).OutOfOrderTimeWindow
}

// IngestionRateSpans is the span rate limit (spans/s; 0 = unlimited).
func (o *Overrides) IngestionRateSpans(tenant string) float64 {
	return o.limits(tenant).IngestionRateSpans
}

// IngestionBurstSizeSpans is the span burst size of the rate limiter.
func (o *Overrides) IngestionBurstSizeSpans(tenant string) int {
	return o.limits(tenant).IngestionBurstSizeSpans
}

// MaxSpanBytes is the maximum size of one span in bytes (0 = unlimited).
func (o *Overrides) MaxSpanBytes(tenant string) int { return o.limits(tenant).MaxSpanBytes }

// MaxAttributesPerSpan is the maximum number of attributes of one span (0 = unlimited).
func (o *Overrides) MaxAttributesPerSpan(tenant string) int {
	return o.limits(tenant).MaxAttributesPerSpan
}

// MaxSpansPerTrace is the maximum number of spans per trace (0 = unlimited).
func (o *Overrides) MaxSpansPerTrace(tenant string) int { return o.limits(tenant).MaxSpansPerTrace }

// MaxBytesPerTrace is the maximum size of a trace in bytes (0 = unlimited).
func (o *Overrides) MaxBytesPerTrace(tenant string) int { return o.limits(tenant).MaxBytesPerTrace }

// RuntimeOverrides is the content of the runtime configuration file:
//
//	overrides:
//	  tenant-a:
//	    ingestion_rate: 50000
//	    max_global_series_per_user: 1000000
//
// Keys a tenant does not set keep the default value.
type RuntimeOverrides struct {
	Overrides map[string]*Limits `yaml:"overrides"`
}

// ByTenant implements TenantLimits.
func (r *RuntimeOverrides) ByTenant(tenant string) *Limits {
	if r == nil {
		return nil
	}
	return r.Overrides[tenant]
}

// ParseRuntimeOverrides decodes a runtime configuration document. Each
// tenant's limits start from defaults, so a tenant only lists what it changes.
// Unknown keys are errors that name the key, because a typo in a limit name
// would otherwise silently leave the default in place.
func ParseRuntimeOverrides(r io.Reader, defaults Limits) (*RuntimeOverrides, error) {
	var raw struct {
		Overrides map[string]yaml.Node `yaml:"overrides"`
	}
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode runtime config: %w", err)
	}
	out := &RuntimeOverrides{Overrides: make(map[string]*Limits, len(raw.Overrides))}
	for tenant, node := range raw.Overrides {
		l := defaults
		// Node.Decode cannot reject unknown fields, so re-encode the node and
		// decode it strictly.
		buf, err := yaml.Marshal(&node)
		if err != nil {
			return nil, fmt.Errorf("overrides.%s: %w", tenant, err)
		}
		td := yaml.NewDecoder(bytes.NewReader(buf))
		td.KnownFields(true)
		if err := td.Decode(&l); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("overrides.%s: %w", tenant, err)
		}
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("overrides.%s: %w", tenant, err)
		}
		out.Overrides[tenant] = &l
	}
	return out, nil
}
