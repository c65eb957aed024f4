package integration

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"

	"github.com/vigil-obs/vigil/pkg/storage/bucket"
	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestBlocksInS3QueriedAfterLocalCopyIsGone: data cut into blocks lands in S3 (MinIO) as
// <tenant>/<ULID>/ with a Thanos-valid meta.json; once the ingester's local state is deleted
// the same queries answer from the bucket, and queries spanning bucket and fresh head data
// have no gaps and no duplicates.
func TestBlocksInS3QueriedAfterLocalCopyIsGone(t *testing.T) {
	m := testutil.StartMinIO(t)
	dataDir := t.TempDir()
	in := startVigil(t, dataDir, s3Flags(m)...)
	ctx := context.Background()
	now := time.Now().Truncate(time.Minute)
	oldStart := now.Add(-3 * time.Hour)
	const step = 30 * time.Second
	oldPoints := int(150 * time.Minute / step) // up to now-30m

	req := &prompb.WriteRequest{}
	for _, pod := range []string{"p1", "p2"} {
		ts := prompb.TimeSeries{Labels: series("__name__", "bucket_probe", "pod", pod)}
		for i := 0; i < oldPoints; i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: oldStart.Add(time.Duration(i) * step).UnixMilli(), Value: float64(i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	c := writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, "")
	if _, err := storeV1(ctx, c, req); err != nil {
		t.Fatal(err)
	}
	api := queryAPI(t, in, "/prometheus", "")
	rangeQ := promv1.Range{Start: oldStart, End: now.Add(-30 * time.Minute), Step: 5 * time.Minute}
	before, _, err := api.QueryRange(ctx, `sum by (pod) (bucket_probe)`, rangeQ)
	if err != nil {
		t.Fatal(err)
	}

	resp, err := http.Post(in.URL("/ingester/flush"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("flush: %s", resp.Status)
	}

	bkt := minioClient(t, m)
	var metas []*metadata.Meta
	testutil.Eventually(t, 2*time.Minute, func() error {
		metas = nil
		return bkt.Iter(ctx, "anonymous/", func(dir string) error {
			if !strings.HasSuffix(dir, "/") || strings.Contains(dir, "traces") || strings.Contains(dir, "markers") {
				return nil
			}
			rc, err := bkt.Get(ctx, dir+metadata.MetaFilename)
			if err != nil {
				if bkt.IsObjNotFoundErr(err) {
					return fmt.Errorf("block %s has no meta.json yet", dir)
				}
				return err
			}
			defer rc.Close()
			meta, err := metadata.Read(rc)
			if err != nil {
				return fmt.Errorf("block %s: invalid meta.json: %w", dir, err)
			}
			metas = append(metas, meta)
			return nil
		})
	})
	testutil.Eventually(t, 2*time.Minute, func() error {
		if len(metas) == 0 {
			return fmt.Errorf("no block shipped to the bucket yet")
		}
		return nil
	})
	for _, meta := range metas {
		if meta.Thanos.Version != metadata.ThanosVersion1 || meta.Thanos.Labels["tenant_id"] != "anonymous" || meta.Thanos.Downsample.Resolution != 0 {
			t.Fatalf("meta.json thanos section: %+v", meta.Thanos)
		}
		ok, err := bkt.Exists(ctx, "anonymous/"+meta.ULID.String()+"/index")
		if err != nil || !ok {
			t.Fatalf("block %s has no index: %v", meta.ULID, err)
		}
		ok, err = bkt.Exists(ctx, "anonymous/"+meta.ULID.String()+"/chunks/000001")
		if err != nil || !ok {
			t.Fatalf("block %s has no chunks: %v", meta.ULID, err)
		}
	}

	// The ingester's local copy goes away: stop, delete its state, start again.
	in.stop()
	if err := os.RemoveAll(filepath.Join(dataDir, "tsdb")); err != nil {
		t.Fatal(err)
	}
	in.restart()
	testutil.Eventually(t, 2*time.Minute, func() error {
		after, _, err := api.QueryRange(ctx, `sum by (pod) (bucket_probe)`, rangeQ)
		if err != nil {
			return err
		}
		if after.String() != before.String() {
			return fmt.Errorf("from the bucket:\n%v\nwant (from the head):\n%v", after, before)
		}
		return nil
	})

	// New samples into the head; a query spanning bucket and head sees each sample once.
	req = &prompb.WriteRequest{}
	newPoints := int(20 * time.Minute / step)
	for _, pod := range []string{"p1", "p2"} {
		ts := prompb.TimeSeries{Labels: series("__name__", "bucket_probe", "pod", pod)}
		for i := 0; i < newPoints; i++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: now.Add(-20*time.Minute + time.Duration(i)*step).UnixMilli(), Value: float64(oldPoints + i)})
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	if _, err := storeV1(ctx, c, req); err != nil {
		t.Fatal(err)
	}
	v, _, err := api.Query(ctx, `count_over_time(bucket_probe[4h])`, now)
	if err != nil {
		t.Fatal(err)
	}
	vec := v.(model.Vector)
	if len(vec) != 2 {
		t.Fatalf("straddling query: %v", vec)
	}
	for _, s := range vec {
		if int(s.Value) != oldPoints+newPoints {
			t.Fatalf("%v has %v samples across bucket and head, want %d", s.Metric, s.Value, oldPoints+newPoints)
		}
	}
}

// s3Flags point vigil at the MinIO server m.
func s3Flags(m *testutil.MinIO) []string {
	return []string{
		"-storage.backend=s3", "-storage.s3.endpoint=" + m.Endpoint, "-storage.s3.bucket-name=" + m.Bucket,
		"-storage.s3.access-key-id=" + m.AccessKey, "-storage.s3.secret-access-key=" + m.SecretKey,
		"-storage.s3.insecure", "-storage.s3.path-style",
	}
}

// minioClient is an S3 client of the test's own, to inspect what vigil put in the bucket.
func minioClient(t *testing.T, m *testutil.MinIO) objstore.Bucket {
	t.Helper()
	cfg := bucket.Config{Backend: bucket.S3, S3: bucket.S3Config{Endpoint: m.Endpoint, BucketName: m.Bucket, AccessKeyID: m.AccessKey, Insecure: true, PathStyle: true}}
	if err := cfg.S3.SecretAccessKey.Set(m.SecretKey); err != nil {
		t.Fatal(err)
	}
	bkt, err := bucket.NewClient(context.Background(), cfg, "inspect", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return bkt
}
