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
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// waitForRing waits until the /ring page of every instance lists every id as ACTIVE.
func waitForRing(t *testing.T, ids []string, instances ...*instance) {
	t.Helper()
	for _, in := range instances {
		testutil.Eventually(t, time.Minute, func() error {
			resp, err := http.Get(in.URL("/ring"))
			if err != nil {
				return err
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, id := range ids {
				if !strings.Contains(string(page), id) {
					return fmt.Errorf("ring of :%d lacks %s", in.HTTPPort, id)
				}
			}
			if n := strings.Count(string(page), "ACTIVE"); n < len(ids) {
				return fmt.Errorf("ring of :%d has %d ACTIVE instances", in.HTTPPort, n)
			}
			return nil
		})
	}
}

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

	waitForRing(t, []string{"ing-a", "ing-b", "ing-c"}, a, b, c)

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

// TestSeriesLimitIsGlobalAcrossIngesters: -ingester.max-global-series-per-user is a limit
// for the whole cluster. With two ingesters and RF 1 each enforces half of it, so a tenant
// gets the configured number of series, not twice as many. The distributor's and each
// ingester's view of the ring converge a few heartbeats after the ring pages show both, so
// each attempt uses a new tenant until the answer says the limit was shared.
func TestSeriesLimitIsGlobalAcrossIngesters(t *testing.T) {
	const limit, sent = 10, 40
	common := []string{"-ingester.ring.replication-factor=1", "-ingester.ring.heartbeat-period=1s",
		"-auth.multitenancy-enabled=true", fmt.Sprintf("-ingester.max-global-series-per-user=%d", limit)}
	a := startVigil(t, t.TempDir(), append(common, "-ingester.ring.instance-id=ing-a")...)
	b := startVigil(t, t.TempDir(), append(common, "-ingester.ring.instance-id=ing-b", fmt.Sprintf("-memberlist.join=127.0.0.1:%d", a.Memberlist))...)

	waitForRing(t, []string{"ing-a", "ing-b"}, a, b)

	ctx := context.Background()
	now := time.Now()
	attempt := 0
	var tenantID, body string
	testutil.Eventually(t, time.Minute, func() error {
		attempt++
		tenantID = fmt.Sprintf("team-%d", attempt)
		var series []seriesV2
		for i := 0; i < sent; i++ {
			series = append(series, seriesV2{
				lset:    labels.FromStrings("__name__", "global_limit_probe", "pod", fmt.Sprintf("p%02d", i)),
				samples: []prompb.Sample{{Timestamp: now.UnixMilli(), Value: 1}},
				typ:     writev2.Metadata_METRIC_TYPE_GAUGE,
			})
		}
		stats, err := storeV2(ctx, writeClient(t, a, "/api/v1/write", remoteapi.WriteV2MessageType, tenantID), series)
		if err == nil {
			return fmt.Errorf("tenant %s: all %d series accepted, want a 400 over the limit of %d", tenantID, sent, limit)
		}
		body = err.Error()
		// With 40 series over two ingesters each gets more than its share of 5 (the
		// chance that one gets fewer is below 1e-6).
		if stats.Samples != limit || !strings.Contains(body, "this ingester's share is 5") {
			return fmt.Errorf("tenant %s: %d of %d series accepted, want the limit of %d, each ingester enforcing a share of 5: %s", tenantID, stats.Samples, sent, limit, body)
		}
		return nil
	})
	t.Logf("limit shared from attempt %d on", attempt)
	for _, want := range []string{"per_user_series_limit", fmt.Sprintf("per-tenant series limit of %d ", limit),
		"2 healthy ingesters in the ring, each series on 1 of them", "global_limit_probe{pod=", "-ingester.max-global-series-per-user", `"max_global_series_per_user"`} {
		if !strings.Contains(body, want) {
			t.Errorf("400 body lacks %q: %s", want, body)
		}
	}
	// The queriers see exactly the accepted series, and every ingester exports its share.
	for _, in := range []*instance{a, b} {
		v, _, err := queryAPI(t, in, "/prometheus", tenantID).Query(ctx, `count(global_limit_probe)`, now)
		if err != nil {
			t.Fatal(err)
		}
		if vec := v.(model.Vector); len(vec) != 1 || vec[0].Value != limit {
			t.Errorf("count via :%d = %v, want %d", in.HTTPPort, vec, limit)
		}
		resp, err := http.Get(in.URL("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf(`vigil_ingester_local_series_limit{limit="max_global_series_per_user",tenant=%q} 5`, tenantID); !strings.Contains(string(page), want) {
			t.Errorf(":%d /metrics lacks %s", in.HTTPPort, want)
		}
	}
}
