package client

import (
	"context"
	"testing"

	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/prompb"
)

// TestInProcessPush checks the short-circuit: a client whose address belongs to a
// registered in-process pusher calls it directly (same request object, no gRPC), falls
// back to gRPC when the pusher unregisters, when two pushers claim the address, and
// when disabled by configuration.
func TestInProcessPush(t *testing.T) {
	addr, remote := startServer(t, ServerOptions()...)
	ctx := user.InjectOrgID(context.Background(), "team-a")
	newReq := func() *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
			Samples: []prompb.Sample{{Timestamp: 1, Value: 1}},
		}}}
	}
	push := func(c IngesterClient) (*prompb.WriteRequest, *PushResponse) {
		t.Helper()
		req := newReq()
		resp, err := c.Push(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.SamplesWritten != 1 || len(resp.Rejections) != 1 || resp.Rejections[0].Series != "team-a" {
			t.Fatalf("unexpected response %s", resp)
		}
		return req, resp
	}
	c, err := New(addr, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cfgOff := DefaultConfig()
	cfgOff.InProcessPush = false
	cOff, err := New(addr, cfgOff)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cOff.Close() })

	local := &fakeIngester{}
	unregister := RegisterLocalPusher(addr, local)
	req, _ := push(c)
	if local.gotReq != req || remote.gotReq != nil {
		t.Fatalf("in-process push did not call the local pusher directly (local %p, remote %p, sent %p)", local.gotReq, remote.gotReq, req)
	}

	local.gotReq = nil
	req, _ = push(cOff)
	if local.gotReq != nil || remote.gotReq == nil || remote.gotReq == req {
		t.Fatal("with in-process push disabled, the push must go over gRPC")
	}

	// A second pusher on the same address: ambiguous, so gRPC.
	remote.gotReq = nil
	other := &fakeIngester{}
	unregisterOther := RegisterLocalPusher(addr, other)
	push(c)
	if local.gotReq != nil || other.gotReq != nil || remote.gotReq == nil {
		t.Fatal("with two pushers registered for one address, the push must go over gRPC")
	}
	unregisterOther()
	unregister()
	unregister() // idempotent

	remote.gotReq = nil
	push(c)
	if local.gotReq != nil || remote.gotReq == nil {
		t.Fatal("after unregistering, the push must go over gRPC")
	}
	if localPusher(addr) != nil {
		t.Fatal("registry not empty after unregistering")
	}
}
