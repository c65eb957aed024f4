package ingester

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

// fakeRing is a ring of ingesters "ing-0".."ing-<n-1>" (ing-0 is the ingester under test),
// ACTIVE with a fresh heartbeat unless listed in unhealthy or leaving; zones, when set,
// gives instance i zone zones[i%len(zones)].
func fakeRing(n int, zones []string, unhealthy, leaving []int, now time.Time) *ring.Desc {
	desc := ring.NewDesc()
	for i := 0; i < n; i++ {
		inst := ring.InstanceDesc{Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i), State: ring.ACTIVE, Timestamp: now.Unix()}
		if len(zones) > 0 {
			inst.Zone = zones[i%len(zones)]
		}
		for _, u := range unhealthy {
			if u == i {
				inst.Timestamp = now.Add(-time.Hour).Unix()
			}
		}
		for _, l := range leaving {
			if l == i {
				inst.State = ring.LEAVING
			}
		}
		desc.Ingesters[fmt.Sprintf("ing-%d", i)] = inst
	}
	return desc
}

// TestLocalSeriesLimitFromRing: each ingester enforces global × RF ÷ healthy ingesters of a
// tenant-wide series limit, never more than the limit and never less than 1; 0 stays
// unlimited; with zone-aware replication the share is per zone.
func TestLocalSeriesLimitFromRing(t *testing.T) {
	now := time.Now()
	zones3 := []string{"z1", "z2", "z3"}
	for _, tc := range []struct {
		name               string
		desc               *ring.Desc
		rf                 int
		zoneAware          bool
		global, wantLocal  int
		wantExplainedShare bool
	}{
		{name: "no ring seen yet", desc: nil, rf: 3, global: 150000, wantLocal: 150000},
		{name: "single process: RF 1, one ingester", desc: fakeRing(1, nil, nil, nil, now), rf: 1, global: 150000, wantLocal: 150000},
		{name: "RF 3, three ingesters: every ingester holds every series", desc: fakeRing(3, nil, nil, nil, now), rf: 3, global: 150000, wantLocal: 150000},
		{name: "RF 3, six ingesters", desc: fakeRing(6, nil, nil, nil, now), rf: 3, global: 150000, wantLocal: 75000, wantExplainedShare: true},
		{name: "RF 1, four ingesters", desc: fakeRing(4, nil, nil, nil, now), rf: 1, global: 1000, wantLocal: 250, wantExplainedShare: true},
		{name: "unhealthy and leaving ingesters do not count", desc: fakeRing(6, nil, []int{4}, []int{5}, now), rf: 3, global: 1000, wantLocal: 750, wantExplainedShare: true},
		{name: "fewer ingesters than RF: the whole limit, not RF times it", desc: fakeRing(3, nil, []int{1, 2}, nil, now), rf: 3, global: 1000, wantLocal: 1000},
		{name: "this ingester counts itself even if its entry is stale", desc: fakeRing(2, nil, []int{0}, nil, now), rf: 1, global: 1000, wantLocal: 500, wantExplainedShare: true},
		{name: "never below 1", desc: fakeRing(8, nil, nil, nil, now), rf: 1, global: 3, wantLocal: 1, wantExplainedShare: true},
		{name: "0 stays unlimited", desc: fakeRing(8, nil, nil, nil, now), rf: 1, global: 0, wantLocal: 0},
		{name: "zones without zone-aware replication", desc: fakeRing(6, zones3, nil, nil, now), rf: 3, global: 600, wantLocal: 300, wantExplainedShare: true},
		{name: "zone-aware: 3 zones, RF 3, 2 per zone", desc: fakeRing(6, zones3, nil, nil, now), rf: 3, zoneAware: true, global: 600, wantLocal: 300, wantExplainedShare: true},
		{name: "zone-aware: 3 zones, RF 3, 1 per zone", desc: fakeRing(3, zones3, nil, nil, now), rf: 3, zoneAware: true, global: 600, wantLocal: 600},
		{name: "zone-aware: 4 zones, RF 3, 1 per zone", desc: fakeRing(4, []string{"z1", "z2", "z3", "z4"}, nil, nil, now), rf: 3, zoneAware: true, global: 600, wantLocal: 450, wantExplainedShare: true},
		{name: "zone-aware, one zone", desc: fakeRing(4, []string{"z1"}, nil, nil, now), rf: 2, zoneAware: true, global: 600, wantLocal: 300, wantExplainedShare: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRingShare(RingConfig{ReplicationFactor: tc.rf, ZoneAwarenessEnabled: tc.zoneAware, HeartbeatTimeout: time.Minute}, nil)
			if tc.desc != nil {
				zone := ""
				if self, ok := tc.desc.Ingesters["ing-0"]; ok {
					zone = self.Zone
				}
				s.observe(tc.desc, "ing-0", zone, now)
			}
			share := s.load()
			if got := share.local(tc.global); got != tc.wantLocal {
				t.Fatalf("local limit of %d = %d (share %+v), want %d", tc.global, got, share, tc.wantLocal)
			}
			// The refusal explains a share whenever the ingester enforces less than the limit.
			err := (&seriesLimitError{reason: client.ReasonPerUserSeriesLimit, limit: tc.global, local: tc.wantLocal, share: share}).Error()
			if !strings.Contains(err, fmt.Sprintf("series limit of %d ", tc.global)) {
				t.Errorf("message %q does not name the limit", err)
			}
			if got := strings.Contains(err, fmt.Sprintf("this ingester's share is %d", tc.wantLocal)); got != tc.wantExplainedShare {
				t.Errorf("message %q explains a share: %v, want %v", err, got, tc.wantExplainedShare)
			}
		})
	}
}

// TestSeriesLimitsAreSharedWithTheRing: a real ingester in a ring of four healthy ingesters
// with RF 2 enforces half of a tenant's global limits, says so when it refuses a series,
// exports the local limit, and follows the ring when ingesters leave.
func TestSeriesLimitsAreSharedWithTheRing(t *testing.T) {
	store, closer := consul.NewInMemoryClient(ring.GetCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })
	ctx := context.Background()
	// Three other ingesters (ing-1..ing-3) heartbeating, one that stopped long ago.
	desc := fakeRing(5, nil, []int{4}, nil, time.Now())
	delete(desc.Ingesters, "ing-0")
	if err := store.CAS(ctx, RingKey, func(any) (any, bool, error) { return desc, true, nil }); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.Ring.InstanceID = "ing-0"
	cfg.Ring.InstancePort = 19096
	cfg.Ring.HeartbeatPeriod = 50 * time.Millisecond
	cfg.Ring.ReplicationFactor = 2
	cfg.Ring.AutoForgetPeriods = 0
	ing, err := New(cfg, fixedLimits{perTenant: 10, perMetric: 4}, nil, store, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(ctx, ing); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, ing) })

	base := time.Now().UnixMilli()
	push := func(names ...string) *client.PushResponse {
		t.Helper()
		req := &prompb.WriteRequest{}
		for _, n := range names {
			req.Timeseries = append(req.Timeseries, series([]string{"__name__", n}, prompb.Sample{Timestamp: base, Value: 1}))
		}
		resp, err := ing.Push(ctxFor("t1"), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	names := func(prefix string, n int) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, fmt.Sprintf("%s_%d", prefix, i))
		}
		return out
	}

	// Four healthy ingesters (this one included), RF 2: 10 × 2 ÷ 4 = 5 series per tenant.
	resp := push(names("a", 7)...)
	if resp.SamplesWritten != 5 || len(resp.Rejections) != 2 {
		t.Fatalf("with a share of 5 of 10: %s", resp)
	}
	r := resp.Rejections[0]
	for _, want := range []string{"per-tenant series limit of 10 ", "this ingester's share is 5", "4 healthy ingesters in the ring, each series on 2 of them"} {
		if r.Reason != client.ReasonPerUserSeriesLimit || !strings.Contains(r.Message, want) {
			t.Errorf("rejection %+v lacks %q", r, want)
		}
	}
	// The per-metric limit is shared the same way: 4 × 2 ÷ 4 = 2.
	if err := testutil.CollectAndCompare(localLimitsCollector{i: ing}, strings.NewReader(`
# HELP vigil_ingester_local_series_limit `+localLimitsHelp+`
# TYPE vigil_ingester_local_series_limit gauge
vigil_ingester_local_series_limit{limit="max_global_series_per_metric",tenant="t1"} 2
vigil_ingester_local_series_limit{limit="max_global_series_per_user",tenant="t1"} 5
`)); err != nil {
		t.Error(err)
	}

	// Two ingesters leave: two remain, each holds every series (RF 2), the whole limit applies
	// from the next heartbeat on.
	if err := store.CAS(ctx, RingKey, func(in any) (any, bool, error) {
		d := in.(*ring.Desc)
		delete(d.Ingesters, "ing-2")
		delete(d.Ingesters, "ing-3")
		return d, true, nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the share to follow the ring", func() bool {
		perTenant, _ := ing.getTSDB("t1").limiter.localLimits()
		return perTenant == 10
	})
	resp = push(names("b", 7)...)
	if resp.SamplesWritten != 5 || len(resp.Rejections) != 2 || strings.Contains(resp.Rejections[0].Message, "share") {
		t.Fatalf("with the whole limit of 10 (5 series stored before): %s", resp)
	}
}
