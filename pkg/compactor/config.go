package compactor

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Config configures the metrics compactor.
type Config struct {
	DataDir               string        `yaml:"data_dir"`
	CompactionInterval    time.Duration `yaml:"compaction_interval"`
	BlockRanges           DurationList  `yaml:"block_ranges"`
	WindowCloseDelay      time.Duration `yaml:"window_close_delay"`
	DeletionDelay         time.Duration `yaml:"deletion_delay"`
	BlocksRetentionPeriod time.Duration `yaml:"blocks_retention_period"`
}

// RegisterFlags registers the compactor flags. The lead derives DataDir's default from
// -data-dir (<data-dir>/compactor).
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.BlockRanges = DurationList{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}
	f.StringVar(&c.DataDir, "compactor.data-dir", "./data/compactor", "Scratch directory where the metrics compactor downloads source blocks and writes the compacted block before uploading it. Emptied after each job.")
	f.DurationVar(&c.CompactionInterval, "compactor.compaction-interval", time.Hour, "How often the metrics compactor plans and runs compactions, retention and deletions for every tenant. The first run starts right after startup.")
	f.Var(&c.BlockRanges, "compactor.block-ranges", "Comma-separated, ascending block time ranges to compact into; each must be a multiple of the previous one. Blocks of one aligned window are merged (and replicas deduplicated) once the window is complete.")
	f.DurationVar(&c.WindowCloseDelay, "compactor.window-close-delay", 3*time.Hour, "A window is compacted once a block newer than its end exists, or once its end is this long ago, so a window still receiving blocks (e.g. from a lagging ingester) is left alone.")
	f.DurationVar(&c.DeletionDelay, "compactor.deletion-delay", 12*time.Hour, "Time between marking a block for deletion (deletion-mark.json) and deleting it. Must exceed the store-gateways' sync interval, so that they load the compacted block before its sources go.")
	f.DurationVar(&c.BlocksRetentionPeriod, "compactor.blocks-retention-period", 0, "Mark metrics blocks for deletion once their newest sample is older than this. 0 keeps blocks forever.")
}

// Validate checks the configuration; errors name the flag.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("compactor.data-dir must not be empty")
	}
	if c.CompactionInterval <= 0 {
		return errors.New("compactor.compaction-interval must be positive")
	}
	if len(c.BlockRanges) == 0 {
		return errors.New("compactor.block-ranges must list at least one range")
	}
	for i, r := range c.BlockRanges {
		if r <= 0 || r%time.Millisecond != 0 {
			return fmt.Errorf("compactor.block-ranges: %s must be a positive whole number of milliseconds", r)
		}
		if i > 0 && (r <= c.BlockRanges[i-1] || r%c.BlockRanges[i-1] != 0) {
			return fmt.Errorf("compactor.block-ranges: %s must be a larger multiple of %s", r, c.BlockRanges[i-1])
		}
	}
	if c.WindowCloseDelay < 0 || c.DeletionDelay < 0 || c.BlocksRetentionPeriod < 0 {
		return errors.New("compactor.window-close-delay, compactor.deletion-delay and compactor.blocks-retention-period must not be negative")
	}
	return nil
}

// DurationList is a comma-separated list of durations as a flag, and a list in YAML.
type DurationList []time.Duration

// String renders the list the way Set parses it, in Prometheus' short form ("2h,12h,1d").
func (d *DurationList) String() string {
	parts := make([]string, 0, len(*d))
	for _, v := range *d {
		parts = append(parts, model.Duration(v).String())
	}
	return strings.Join(parts, ",")
}

// Set parses "2h,12h,24h" (Prometheus durations, so "1d" works too).
func (d *DurationList) Set(s string) error {
	var out DurationList
	for _, p := range strings.Split(s, ",") {
		v, err := model.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("parse duration %q: %w", p, err)
		}
		out = append(out, time.Duration(v))
	}
	*d = out
	return nil
}

// millis returns the ranges in milliseconds, the unit of block time ranges.
func (d DurationList) millis() []int64 {
	out := make([]int64, len(d))
	for i, v := range d {
		out[i] = v.Milliseconds()
	}
	return out
}
