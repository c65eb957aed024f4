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

	if err := services.StopAndAwaitTerminated(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ingester to leave the ring", func() bool {
		_, ok := desc().Ingesters["ing-1"]
		return !ok
	})
}
