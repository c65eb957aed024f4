package receiver

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// A real dskit ring (in-memory KV) with three ingesters, RF 2: every trace
// lands whole on exactly the two ingesters the ring assigns to its token.
func TestRealRingSharding(t *testing.T) {
	ings := []*fakeIngester{startIngester(t), startIngester(t), startIngester(t)}
	store, closer := consul.NewInMemoryClient(ring.GetCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })

	desc := ring.NewDesc()
	rnd := rand.New(rand.NewSource(1))
	for i, ing := range ings {
		tokens := make([]uint32, 128)
		for j := range tokens {
			tokens[j] = rnd.Uint32()
		}
		sort.Slice(tokens, func(a, b int) bool { return tokens[a] < tokens[b] })
		desc.AddIngester(fmt.Sprintf("ingester-%d", i), ing.addr, "", tokens, ring.ACTIVE, time.Now(), false, time.Time{}, nil)
	}
	ctx := context.Background()
	if err := store.CAS(ctx, "ingester", func(any) (any, bool, error) { return desc, true, nil }); err != nil {
		t.Fatal(err)
	}
	var rcfg ring.Config
	rcfg.RegisterFlags(flag.NewFlagSet("ring", flag.PanicOnError))
	rcfg.ReplicationFactor = 2
	rcfg.HeartbeatTimeout = time.Hour // heartbeats are not simulated; AddIngester stamped them now
	rg, err := ring.NewWithStoreClientAndStrategy(rcfg, "ingester", "ingester", store, ring.NewDefaultReplicationStrategy(), prometheus.NewRegistry(), log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(ctx, rg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), rg) })
	waitFor(t, func() bool { return rg.InstancesCount() == 3 }, "the ring to see 3 ingesters")

	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.PanicOnError))
	r, err := New(cfg, staticLimits{}, rg, NewGRPCClientFactory(), nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.stopping(nil) })

	// 40 traces of 3 spans, the spans of each trace spread over two
	// resources so the split has to regroup them.
	td := ptrace.NewTraces()
	for res := 0; res < 2; res++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("svc-%d", res))
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for tr := 0; tr < 40; tr++ {
			for k := 0; k < 1+res; k++ {
				s := spans.AppendEmpty()
				s.SetTraceID(pcommon.TraceID{byte(tr), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
				s.SetSpanID(pcommon.SpanID{byte(tr), byte(res), byte(k), 1, 1, 1, 1, 1})
				s.SetName("op")
			}
		}
	}
	if _, err := r.Push(ctx, "t1", "test", td); err != nil {
		t.Fatal(err)
	}
	for tr := 0; tr < 40; tr++ {
		id := pcommon.TraceID{byte(tr), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
		set, err := rg.Get(TraceToken("t1", id), ring.WriteNoExtend, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, inst := range set.Instances {
			want[inst.Addr] = true
		}
		if len(want) != 2 {
			t.Fatalf("ring gave %d replicas", len(want))
		}
		for _, ing := range ings {
			n := 0
			for k := range ing.spanSet("t1") {
				if k[:32] == id.String() {
					n++
				}
			}
			switch {
			case want[ing.addr] && n != 3:
				t.Errorf("trace %d: replica %s holds %d of 3 spans", tr, ing.addr, n)
			case !want[ing.addr] && n != 0:
				t.Errorf("trace %d: non-replica %s holds %d spans", tr, ing.addr, n)
			}
		}
	}
	// With one ingester refusing, RF 2 has no quorum: 503, nothing acknowledged.
	ings[0].setFail(fmt.Errorf("disk full"))
	_, err = r.Push(ctx, "t1", "test", makeTraces(40, 0))
	var pe *PushError
	if !asPushError(err, &pe) || pe.Code != http.StatusServiceUnavailable {
		t.Fatalf("push with a failing replica: %v", err)
	}
}
