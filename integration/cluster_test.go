package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestReplicatedClusterSurvivesLosingAnIngester: three Vigil processes gossip into one ring
// with replication factor 3. Writes reach every replica; queries return each sample once;
// after one process is killed, writes still reach a quorum and queries still answer, with
// neither gaps nor duplicates.
func TestReplicatedClusterSurvivesLosingAnIngester(t *testing.T) {
	common := []string{"-ingester.ring.replication-factor=3", "-ingester.ring.heartbeat-period=1s"}
	a := startVigil(t, t.TempDir(), append(common, "-ingester.ring.instance-id=ing-a")...)
	join := fmt.Sprintf("-memberlist.join=127.0.0.1:%d", a.Memberlist)
	b := startVigil(t, t.TempDir(), append(common, "-ingester.ring.instance-id=ing-b", join)...)
	c := startVigil(t, t.TempDir(), append(common, "-ingester.ring.instance-id=ing-c", join)...)

	for _, in := range []*instance{a, b, c} {
		testutil.Eventually(t, time.Minute, func() error {
			resp, err := http.Get(in.URL("/ring"))
			if err != nil {
				return err
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, id := range []string{"ing-a", "ing-b", "ing-c"} {
				if !strings.Contains(string(page), id) {
					return fmt.Errorf("ring of :%d lacks %s", in.HTTPPort, id)
				}
			}
			if n := strings.Count(string(page), "ACTIVE"); n < 3 {
				return fmt.Errorf("ring of :%d has %d ACTIVE instances", in.HTTPPort, n)
			}
			return nil
		})
	}

	ctx := context.Background()
	start := time.Now().Add(-30 * time.Minute).Truncate(time.Second) // 250 samples 5s apart end before now
	write := func(in *instance, from, to int) {
		t.Helper()
		req := &prompb.WriteRequest{}
		for s := 0; s < 10; s++ {
			ts := prompb.TimeSeries{Labels: series("__name__", "replicated_probe", "shard", fmt.Sprint(s))}
			for i := from; i < to; i++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: start.Add(time.Duration(i) * 5 * time.Second).UnixMilli(), Value: float64(i)})
			}
			req.Timeseries = append(req.Timeseries, ts)
		}
		if _, err := storeV1(ctx, writeClient(t, in, "/api/v1/push", remoteapi.WriteV1MessageType, ""), req); err != nil {
			t.Fatalf("write via :%d: %v", in.HTTPPort, err)
		}
	}
	countEach := func(in *instance, want int) error {
		v, _, err := queryAPI(t, in, "/prometheus", "").Query(ctx, `count_over_time(replicated_probe[1h])`, time.Now())
		if err != nil {
			return err
		}
		vec := v.(model.Vector)
		if len(vec) != 10 {
			return fmt.Errorf("query via :%d: %d series, want 10", in.HTTPPort, len(vec))
		}
		for _, s := range vec {
			if int(s.Value) != want {
				return fmt.Errorf("query via :%d: %v has %v samples, want %d", in.HTTPPort, s.Metric, s.Value, want)
			}
		}
		return nil
	}

	write(a, 0, 100)
	for _, in := range []*instance{a, b, c} {
		if err := countEach(in, 100); err != nil {
			t.Fatal(err)
		}
	}
	// Every ingester holds a replica: each one appended all 1000 samples itself.
	for _, in := range []*instance{a, b, c} {
		resp, err := http.Get(in.URL("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "\nvigil_ingester_samples_appended_total 1000\n") {
			t.Fatalf(":%d did not append the 1000 replicated samples", in.HTTPPort)
		}
	}

	c.kill9()
	write(a, 100, 200) // 2 of 3 replicas is a quorum
	write(b, 200, 250)
	for _, in := range []*instance{a, b} {
		if err := countEach(in, 250); err != nil {
			t.Fatal(err)
		}
	}
}
