package distributor

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestShardingOverRing checks where series land for both ways send distributes a
// request: sharded by token when the ring has more ingesters than the replication
// factor, and the whole request to every ingester when it has no more.
func TestShardingOverRing(t *testing.T) {
	for _, tc := range []struct {
		ingesters, rf int
	}{
		{ingesters: 1, rf: 1},
		{ingesters: 3, rf: 1},
		{ingesters: 3, rf: 2},
		{ingesters: 3, rf: 3},
	} {
		t.Run(fmt.Sprintf("%d ingesters rf %d", tc.ingesters, tc.rf), func(t *testing.T) {
			env := newTestEnv(t, envOptions{ingesters: tc.ingesters, rf: tc.rf})
			const n = 300
			now := time.Now().UnixMilli()
			req := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{MetricFamilyName: "m", Type: prompb.MetricMetadata_COUNTER, Help: "h"}}}
			for i := 0; i < n; i++ {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  series("__name__", "m", "i", fmt.Sprint(i)),
					Samples: []prompb.Sample{{Value: float64(i), Timestamp: now}},
				})
			}
			res, err := env.d.PushMetrics(userCtx("t1"), req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Samples != n || res.Metadata != 1 {
				t.Fatalf("result = %+v", res)
			}
			// Pushes beyond the write quorum may still be running: wait for them.
			var copies map[string]int
			var used int
			for deadline := time.Now().Add(10 * time.Second); ; {
				copies, used = map[string]int{}, 0
				total := 0
				for _, fi := range env.ingesters {
					s := fi.series()
					if len(s) > 0 {
						used++
					}
					for k, ts := range s {
						copies[k]++
						total++
						if len(ts.Samples) != 1 {
							t.Fatalf("series %s has %d samples on one ingester", k, len(ts.Samples))
						}
					}
				}
				if total >= n*tc.rf || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if len(copies) != n {
				t.Fatalf("%d distinct series on the ingesters, want %d", len(copies), n)
			}
			for k, c := range copies {
				if c != tc.rf {
					t.Fatalf("series %s on %d ingesters, want %d", k, c, tc.rf)
				}
			}
			if used != tc.ingesters {
				t.Fatalf("%d of %d ingesters got series", used, tc.ingesters)
			}
			if md := len(env.allMetadata()); md < tc.rf/2+1 || md > tc.rf {
				t.Fatalf("metadata on %d ingesters, want %d", md, tc.rf)
			}
		})
	}
}
