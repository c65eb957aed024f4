package compactor

import (
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/thanos/pkg/block/metadata"
)

func TestPlanNext(t *testing.T) {
	ranges := DurationList{2 * time.Hour, 12 * time.Hour, 24 * time.Hour}.millis()
	var seq uint64
	block := func(mint, maxt int64) *metadata.Meta {
		seq++
		return &metadata.Meta{BlockMeta: tsdb.BlockMeta{ULID: ulid.ULID{15: byte(seq)}, MinTime: mint, MaxTime: maxt}}
	}
	const delay = 3 * hour
	for _, tc := range []struct {
		name   string
		blocks []*metadata.Meta
		now    int64
		want   int // number of blocks in the job; 0 = no job
	}{
		{"single block", []*metadata.Meta{block(0, 2*hour)}, 100 * hour, 0},
		{"replicas, open window", []*metadata.Meta{block(0, 2*hour), block(0, 2*hour)}, 2*hour + 1, 0},
		{"replicas, closed by a newer block", []*metadata.Meta{block(0, 2*hour), block(0, 2*hour), block(2*hour, 4*hour)}, 2*hour + 1, 2},
		{"replicas, closed by the delay", []*metadata.Meta{block(0, 2*hour), block(0, 2*hour)}, 5 * hour, 2},
		{"complete 24h window merged in one job", []*metadata.Meta{block(0, 2*hour), block(12*hour, 14*hour), block(22*hour, 24*hour), block(24*hour, 26*hour)}, 26 * hour, 3},
		{"block crossing every window is left alone", []*metadata.Meta{block(23*hour, 25*hour), block(23*hour, 25*hour)}, 100 * hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := planNext(tc.blocks, ranges, tc.now, delay)
			if len(job) != tc.want {
				t.Fatalf("job of %d blocks, want %d", len(job), tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{DataDir: "x", CompactionInterval: time.Hour, BlockRanges: DurationList{2 * time.Hour, 12 * time.Hour}}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, ranges := range map[string]DurationList{
		"empty":        nil,
		"not multiple": {2 * time.Hour, 3 * time.Hour},
		"descending":   {12 * time.Hour, 2 * time.Hour},
	} {
		c := base
		c.BlockRanges = ranges
		if err := c.Validate(); err == nil {
			t.Errorf("%s: block ranges %v accepted", name, ranges)
		}
	}
	var d DurationList
	if err := d.Set("2h,12h,24h"); err != nil || d.String() != "2h,12h,1d" {
		t.Errorf("DurationList round trip: %v %q", err, d.String())
	}
}
