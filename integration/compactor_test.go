package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/thanos-io/objstore/providers/filesystem"

	"github.com/vigil-obs/vigil/pkg/compactor"
	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                      { return s.t }
func (s floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                    { return s.f }
func (s floatSample) H() *histogram.Histogram       { return nil }
func (s floatSample) FH() *histogram.FloatHistogram { return nil }
func (s floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample           { return s }

// TestCompactorMergesReplicaBlocks runs the real binary (-target=all) over a bucket holding
// what three ingesters with replication factor 3 ship: three copies of every 2-hour block.
// The compactor merges a complete day into one block with each sample once, marks the
// replaced blocks, writes the bucket index, and queries answer the same values as before.
func TestCompactorMergesReplicaBlocks(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	bkt, err := filesystem.NewBucket(filepath.Join(dataDir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	// Three 2-hour blocks of one day that ended long ago, three replicas each.
	day := time.Now().Add(-72 * time.Hour).Truncate(24 * time.Hour)
	const step = time.Minute
	perBlock := int(2 * time.Hour / step)
	for block := 0; block < 3; block++ {
		from := day.Add(time.Duration(block) * 2 * time.Hour)
		for replica := 0; replica < 3; replica++ {
			var ss []storage.Series
			for _, pod := range []string{"a", "b"} {
				smps := make([]chunks.Sample, 0, perBlock)
				for i := 0; i < perBlock; i++ {
					ts := from.Add(time.Duration(i) * step)
					smps = append(smps, floatSample{t: ts.UnixMilli(), f: float64(ts.Unix() % 1000)})
				}
				ss = append(ss, storage.NewListSeries(labels.FromStrings("__name__", "compact_probe", "pod", pod), smps))
			}
			if _, err := storegatewaytest.WriteBlock(ctx, bkt, t.TempDir(), "anonymous", ss, storegatewaytest.BlockOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Replaced blocks are dropped by the store-gateway at its next sync, so that the query
	// below reads the compacted block alone.
	in := startVigil(t, dataDir, "-store-gateway.ignore-deletion-marks-delay=0s", "-store-gateway.sync-interval=1s")
	var idx *compactor.BucketIndex
	testutil.Eventually(t, 2*time.Minute, func() error {
		idx, err = compactor.ReadBucketIndex(ctx, bkt, "anonymous")
		if err != nil {
			return err
		}
		if len(idx.BlockDeletionMarks) != 9 {
			return fmt.Errorf("bucket index has %d deletion marks, want the 9 replica blocks", len(idx.BlockDeletionMarks))
		}
		return nil
	})
	if len(idx.Blocks) != 10 {
		t.Fatalf("bucket index lists %d blocks, want the 9 sources and 1 compacted block", len(idx.Blocks))
	}
	marked := map[string]bool{}
	for _, m := range idx.BlockDeletionMarks {
		marked[m.ID.String()] = true
	}
	var compacted *compactor.BucketIndexBlock
	for i, b := range idx.Blocks {
		if !marked[b.ID.String()] {
			compacted = &idx.Blocks[i]
		}
	}
	if compacted == nil || compacted.MinTime != day.UnixMilli() || compacted.MaxTime != day.Add(6*time.Hour-step).UnixMilli()+1 || compacted.Source != "compactor" {
		t.Fatalf("compacted block = %+v, want [%d, %d) from the compactor", compacted, day.UnixMilli(), day.Add(6*time.Hour-step).UnixMilli()+1)
	}

	testutil.Eventually(t, time.Minute, func() error {
		resp, err := http.Get(in.URL("/metrics"))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "\nvigil_storegateway_blocks_loaded 1\n") {
			return errors.New("store-gateway does not serve the compacted block alone yet")
		}
		return nil
	})

	// Each sample is in the compacted block once.
	api := queryAPI(t, in, "/prometheus", "")
	at := day.Add(6*time.Hour - step)
	v, _, err := api.Query(ctx, `count_over_time(compact_probe[6h])`, at)
	if err != nil {
		t.Fatal(err)
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 2 {
		t.Fatalf("query over the compacted day = %v, want two series", v)
	}
	for _, s := range vec {
		if int(s.Value) != 3*perBlock {
			t.Fatalf("%s has %v samples over the day, want %d", s.Metric, s.Value, 3*perBlock)
		}
	}
}
