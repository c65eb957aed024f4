package distributor

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/grafana/dskit/flagext"
)

// Config configures the distributor. Per-tenant limits live in
// pkg/util/validation; this is only what is the same for every tenant.
type Config struct {
	// ReplicationFactor is how many ingesters receive each series.
	ReplicationFactor int `yaml:"replication_factor"`
	// HeartbeatTimeout is how long an ingester may miss heartbeats before the
	// distributor stops writing to it.
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// ZoneAwarenessEnabled places replicas in different zones.
	ZoneAwarenessEnabled bool `yaml:"zone_awareness_enabled"`
	// RemoteTimeout bounds one push to one ingester.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`

	// OTLP translation, mirroring Prometheus' `otlp:` configuration block.
	OTLP OTLPConfig `yaml:"otlp"`

	// MultiTenancyEnabled is set by the caller from the global
	// `-auth.multitenancy-enabled` flag, which the querier shares; the
	// distributor does not register it so the flag is defined once.
	MultiTenancyEnabled bool `yaml:"-"`
}

// OTLPConfig mirrors the subset of Prometheus' OTLP receiver settings that
// change series names and labels.
type OTLPConfig struct {
	PromoteResourceAttributes         flagext.StringSliceCSV `yaml:"promote_resource_attributes"`
	PromoteAllResourceAttributes      bool                   `yaml:"promote_all_resource_attributes"`
	KeepIdentifyingResourceAttributes bool                   `yaml:"keep_identifying_resource_attributes"`
	ConvertHistogramsToNHCB           bool                   `yaml:"convert_histograms_to_nhcb"`
	PromoteScopeMetadata              bool                   `yaml:"promote_scope_metadata"`
	// NativeDeltaIngestion stores delta sums and histograms as they are (type
	// unknown), like Prometheus' otlp-native-delta-ingestion feature;
	// otherwise they are refused, as Prometheus does by default.
	NativeDeltaIngestion bool `yaml:"native_delta_ingestion"`
	// LookbackDelta spaces the synthesized target_info samples; it must match
	// the querier's PromQL lookback delta so target_info has no gaps.
	LookbackDelta time.Duration `yaml:"lookback_delta"`
}

// RegisterFlags registers the distributor flags.
func (cfg *Config) RegisterFlags(f *flag.FlagSet) {
	f.IntVar(&cfg.ReplicationFactor, "ingester.ring.replication-factor", 1, "Number of ingesters each series is written to. Writes succeed once a quorum (RF/2+1) acknowledged. Use 3 in production.")
	f.DurationVar(&cfg.HeartbeatTimeout, "distributor.ring.heartbeat-timeout", time.Minute, "An ingester that has not heartbeated in the ring for this long is considered unhealthy and is not written to.")
	f.BoolVar(&cfg.ZoneAwarenessEnabled, "ingester.ring.zone-awareness-enabled", false, "Place the replicas of each series in different availability zones.")
	f.DurationVar(&cfg.RemoteTimeout, "distributor.remote-timeout", 5*time.Second, "Timeout of one push to one ingester.")

	f.Var(&cfg.OTLP.PromoteResourceAttributes, "distributor.otlp.promote-resource-attributes", "Comma-separated OTel resource attributes to promote to labels of every series (as Prometheus' otlp.promote_resource_attributes).")
	f.BoolVar(&cfg.OTLP.PromoteAllResourceAttributes, "distributor.otlp.promote-all-resource-attributes", false, "Promote every OTel resource attribute to a label (as Prometheus' otlp.promote_all_resource_attributes).")
	f.BoolVar(&cfg.OTLP.KeepIdentifyingResourceAttributes, "distributor.otlp.keep-identifying-resource-attributes", false, "Keep service.name, service.namespace and service.instance.id as labels on target_info in addition to job and instance.")
	f.BoolVar(&cfg.OTLP.ConvertHistogramsToNHCB, "distributor.otlp.convert-histograms-to-nhcb", false, "Convert OTLP explicit-bucket histograms to native histograms with custom buckets instead of classic _bucket series.")
	f.BoolVar(&cfg.OTLP.PromoteScopeMetadata, "distributor.otlp.promote-scope-metadata", false, "Add otel_scope_name, otel_scope_version and scope attributes as labels.")
	f.BoolVar(&cfg.OTLP.NativeDeltaIngestion, "distributor.otlp.native-delta-ingestion", false, "Accept OTLP delta-temporality sums and histograms and store their samples as they are (as Prometheus' otlp-native-delta-ingestion feature). Query them with sum_over_time, not rate.")
	f.DurationVar(&cfg.OTLP.LookbackDelta, "distributor.otlp.lookback-delta", 5*time.Minute, "PromQL lookback delta of the queriers; OTLP target_info samples are spaced by it.")
}

// Validate reports a bad setting, naming its key.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.ReplicationFactor < 1 {
		errs = append(errs, fmt.Errorf("replication_factor: must be at least 1, got %d", cfg.ReplicationFactor))
	}
	if cfg.HeartbeatTimeout < 0 {
		errs = append(errs, fmt.Errorf("heartbeat_timeout: must not be negative, got %s", cfg.HeartbeatTimeout))
	}
	if cfg.RemoteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("remote_timeout: must be positive, got %s", cfg.RemoteTimeout))
	}
	if cfg.OTLP.PromoteAllResourceAttributes && len(cfg.OTLP.PromoteResourceAttributes) > 0 {
		errs = append(errs, errors.New("otlp.promote_resource_attributes: cannot be combined with promote_all_resource_attributes"))
	}
	return errors.Join(errs...)
}
