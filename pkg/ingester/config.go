package ingester

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// Config configures the metrics ingester.
type Config struct {
	// DataDir is the parent of the per-tenant TSDBs, which live in <DataDir>/tsdb/<tenant>/.
	DataDir string `yaml:"data_dir"`

	BlockRange                time.Duration `yaml:"block_range"`
	CompactionInterval        time.Duration `yaml:"compaction_interval"`
	HeadCompactionIdleTimeout time.Duration `yaml:"head_compaction_idle_timeout"`
	RetentionPeriod           time.Duration `yaml:"retention_period"`
	CloseIdleAfter            time.Duration `yaml:"tsdb_close_idle_after"`
	BlockReloadInterval       time.Duration `yaml:"tsdb_block_reload_interval"`
	ShipInterval              time.Duration `yaml:"ship_interval"`

	WALSegmentSize int  `yaml:"wal_segment_size"`
	WALCompression bool `yaml:"wal_compression"`
	WALFsyncOnPush bool `yaml:"wal_fsync_on_push"`

	MaxExemplars    int64 `yaml:"max_exemplars"`
	StripeSize      int   `yaml:"tsdb_stripe_size"`
	MaxRejections   int   `yaml:"max_rejections_per_push"`
	ShipperDisabled bool  `yaml:"shipper_disabled"`
	FlushOnShutdown bool  `yaml:"flush_on_shutdown"`

	Ring RingConfig `yaml:"ring"`
}

// RegisterFlags registers the ingester flags.
func (cfg *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&cfg.DataDir, "ingester.data-dir", "./data", "Directory under which per-tenant TSDBs are kept (<dir>/tsdb/<tenant>/).")
	f.DurationVar(&cfg.BlockRange, "ingester.block-range", 2*time.Hour, "Time range of the blocks the ingester cuts from its head and ships.")
	f.DurationVar(&cfg.CompactionInterval, "ingester.compaction-interval", time.Minute, "How often the ingester checks whether a head has a block ready to cut and ships new blocks.")
	f.DurationVar(&cfg.HeadCompactionIdleTimeout, "ingester.head-compaction-idle-timeout", time.Hour, "Cut the whole head of a tenant into blocks when it received no write for this long (0 disables).")
	f.DurationVar(&cfg.RetentionPeriod, "ingester.retention-period", 6*time.Hour, "How long blocks stay on local disk after they were shipped to the bucket, so recent queries do not need the store-gateway.")
	f.DurationVar(&cfg.CloseIdleAfter, "ingester.tsdb-close-idle-after", 13*time.Hour, "Close and remove a tenant's local TSDB after no write for this long, once its head is empty and all its blocks were shipped and retained (0 disables).")
	f.DurationVar(&cfg.BlockReloadInterval, "ingester.tsdb-block-reload-interval", time.Minute, "How often each TSDB reloads its blocks, which is when shipped blocks past retention are deleted locally (minimum 1s).")
	f.DurationVar(&cfg.ShipInterval, "ingester.ship-interval", time.Minute, "How often the ingester retries shipping blocks that failed to upload.")
	f.IntVar(&cfg.WALSegmentSize, "ingester.wal-segment-size", 128<<20, "Size in bytes of a WAL segment file.")
	f.BoolVar(&cfg.WALCompression, "ingester.wal-compression", true, "Compress WAL records with snappy.")
	f.BoolVar(&cfg.WALFsyncOnPush, "ingester.wal-fsync-on-push", false, "fsync the WAL before acknowledging each push. Off: an acknowledged write has been written to the OS and survives a crash or kill -9 of the process, but not a power loss or kernel crash. On: it also survives those, at the cost of one fsync per push.")
	f.Int64Var(&cfg.MaxExemplars, "ingester.max-exemplars", 100000, "Maximum number of exemplars kept in memory per tenant (0 disables exemplar storage).")
	f.IntVar(&cfg.StripeSize, "ingester.tsdb-stripe-size", 16384, "Number of lock stripes of the TSDB series map (power of two).")
	f.IntVar(&cfg.MaxRejections, "ingester.max-rejections-per-push", 100, "Maximum number of per-series rejection entries in one push response; further rejections are summed per reason.")
	f.BoolVar(&cfg.ShipperDisabled, "ingester.shipper-disabled", false, "Do not upload blocks to object storage (blocks then stay local until retention and are lost to long-term queries).")
	f.BoolVar(&cfg.FlushOnShutdown, "ingester.flush-on-shutdown", false, "Cut every head into blocks and ship them when the ingester stops (use when scaling down; a normal restart replays the WAL instead).")
	cfg.Ring.RegisterFlags(f)
}

// Validate checks the configuration; error messages name the flag to fix.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.DataDir == "" {
		errs = append(errs, errors.New("ingester.data-dir must not be empty"))
	}
	if cfg.BlockRange < time.Minute || cfg.BlockRange%time.Minute != 0 {
		errs = append(errs, fmt.Errorf("ingester.block-range must be a whole number of minutes >= 1m, got %s", cfg.BlockRange))
	}
	if cfg.CompactionInterval <= 0 {
		errs = append(errs, fmt.Errorf("ingester.compaction-interval must be positive, got %s", cfg.CompactionInterval))
	}
	if cfg.ShipInterval <= 0 {
		errs = append(errs, fmt.Errorf("ingester.ship-interval must be positive, got %s", cfg.ShipInterval))
	}
	if cfg.RetentionPeriod < 0 {
		errs = append(errs, fmt.Errorf("ingester.retention-period must not be negative, got %s", cfg.RetentionPeriod))
	}
	if cfg.StripeSize <= 0 || cfg.StripeSize&(cfg.StripeSize-1) != 0 {
		errs = append(errs, fmt.Errorf("ingester.tsdb-stripe-size must be a power of two, got %d", cfg.StripeSize))
	}
	if cfg.WALSegmentSize < 64<<10 {
		errs = append(errs, fmt.Errorf("ingester.wal-segment-size must be at least 64KiB, got %d", cfg.WALSegmentSize))
	}
	if cfg.MaxRejections < 1 {
		errs = append(errs, fmt.Errorf("ingester.max-rejections-per-push must be at least 1, got %d", cfg.MaxRejections))
	}
	errs = append(errs, cfg.Ring.Validate())
	return errors.Join(errs...)
}

// DefaultConfig returns the flag defaults.
func DefaultConfig() Config {
	var cfg Config
	fs := flag.NewFlagSet("", flag.PanicOnError)
	cfg.RegisterFlags(fs)
	return cfg
}

// RingConfig configures the ingester's membership in the ring.
type RingConfig struct {
	InstanceID       string        `yaml:"instance_id"`
	InstanceAddr     string        `yaml:"instance_addr"`
	InstancePort     int           `yaml:"instance_port"`
	InstanceZone     string        `yaml:"instance_availability_zone"`
	NumTokens        int           `yaml:"num_tokens"`
	HeartbeatPeriod  time.Duration `yaml:"heartbeat_period"`
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout"`
	// AutoForgetPeriods is how many heartbeat timeouts an unhealthy instance may stay in
	// the ring before any healthy ingester removes it.
	AutoForgetPeriods int `yaml:"auto_forget_unhealthy_periods"`

	// ReplicationFactor and ZoneAwarenessEnabled are how the distributors place series
	// (-ingester.ring.replication-factor, -ingester.ring.zone-awareness-enabled, registered
	// by the distributor, which owns them); the caller copies them here so the ingester can
	// enforce its share of the global series limits. 0 counts as 1.
	ReplicationFactor    int  `yaml:"-"`
	ZoneAwarenessEnabled bool `yaml:"-"`
}

// RingKey is the KV key of the ingester ring.
const RingKey = "ingester"

// RingName is the name used in logs, metrics and the status page.
const RingName = "ingester"

// RegisterFlags registers the ring flags under -ingester.ring.
func (cfg *RingConfig) RegisterFlags(f *flag.FlagSet) {
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "ingester"
	}
	f.StringVar(&cfg.InstanceID, "ingester.ring.instance-id", hostname, "Instance ID in the ring (default: hostname).")
	f.StringVar(&cfg.InstanceAddr, "ingester.ring.instance-addr", "127.0.0.1", "IP address other components reach this ingester's gRPC server on.")
	f.IntVar(&cfg.InstancePort, "ingester.ring.instance-port", 9095, "Port other components reach this ingester's gRPC server on (the gRPC listen port).")
	f.StringVar(&cfg.InstanceZone, "ingester.ring.instance-availability-zone", "", "Availability zone of this ingester, for zone-aware replication.")
	f.IntVar(&cfg.NumTokens, "ingester.ring.num-tokens", 128, "Number of tokens this ingester owns in the ring.")
	f.DurationVar(&cfg.HeartbeatPeriod, "ingester.ring.heartbeat-period", 5*time.Second, "Period of heartbeats to the ring.")
	f.DurationVar(&cfg.HeartbeatTimeout, "ingester.ring.heartbeat-timeout", time.Minute, "An ingester without a heartbeat for this long is unhealthy.")
	f.IntVar(&cfg.AutoForgetPeriods, "ingester.ring.auto-forget-unhealthy-periods", 10, "Remove an instance from the ring after this many heartbeat timeouts without a heartbeat (0 disables).")
}

// Validate checks the ring configuration.
func (cfg *RingConfig) Validate() error {
	switch {
	case cfg.InstanceID == "":
		return errors.New("ingester.ring.instance-id must not be empty")
	case cfg.NumTokens <= 0:
		return fmt.Errorf("ingester.ring.num-tokens must be positive, got %d", cfg.NumTokens)
	case cfg.HeartbeatPeriod <= 0:
		return fmt.Errorf("ingester.ring.heartbeat-period must be positive, got %s", cfg.HeartbeatPeriod)
	case cfg.ReplicationFactor < 0:
		return fmt.Errorf("ingester.ring.replication-factor must be at least 1, got %d", cfg.ReplicationFactor)
	}
	return nil
}
