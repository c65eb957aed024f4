package ingester

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/gorilla/mux"
	"github.com/grafana/dskit/kv/consul"
	"github.com/grafana/dskit/ring"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

func TestRingRegistration(t *testing.T) {
	store, closer := consul.NewInMemoryClient(ring.GetCodec(), log.NewNopLogger(), nil)
	t.Cleanup(func() { _ = closer.Close() })

	cfg := testConfig(t)
	cfg.Ring.InstanceID = "ing-1"
	cfg.Ring.InstanceAddr = "127.0.0.1"
	cfg.Ring.InstancePort = 19095
	ing, err := New(cfg, nil, nil, store, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}

	desc := func() *ring.Desc {
		v, err := store.Get(context.Background(), RingKey)
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			return &ring.Desc{}
		}
		return v.(*ring.Desc)
	}
	inst, ok := desc().Ingesters["ing-1"]
	if !ok {
		t.Fatal("ingester not registered in the ring")
	}
	if inst.State != ring.ACTIVE || len(inst.Tokens) != 128 || inst.Addr != "127.0.0.1:19095" {
		t.Fatalf("unexpected ring entry: state %s, %d tokens, addr %s", inst.State, len(inst.Tokens), inst.Addr)
	}

	if err := ing.CheckReady(context.Background()); err != nil {
		t.Fatalf("not ready after start: %v", err)
	}

	// The status page is served.
	r := mux.NewRouter()
	ing.RegisterHTTP(r)
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ingester/ring", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("ring page status %d", rec.Code)
	}

	// A client for the ring address reaches this ingester in-process (whatever listens
	// on 19095), and the ingester leaves the request as it was (unsorted samples are sorted
	// in a copy: replicas may share them).
	c, err := client.New(inst.Addr, client.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	base := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Timestamp: base + 1, Value: 2}, {Timestamp: base, Value: 1}},
	}}}
	resp, err := c.Push(ctxFor("team-a"), req)
	if err != nil {
		t.Fatalf("in-process push: %v", err)
	}
	if resp.SamplesWritten != 2 || len(resp.Rejections) != 0 {
		t.Fatalf("unexpected response %s", resp)
	}
	if req.Timeseries[0].Samples[0].Timestamp != base+1 {
		t.Fatal("push modified the request's samples")
	}
	ing.mtx.RLock()
	_, local := ing.tsdbs["team-a"]
	ing.mtx.RUnlock()
	if !local {
		t.Fatal("the push did not reach this ingester in-process")
	}

	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ingester to leave the ring", func() bool {
		_, ok := desc().Ingesters["ing-1"]
		return !ok
	})
}
