package client

import (
	"context"
	"sync"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
)

// In-process short-circuit of Push.
//
// With -target=all the distributor and the ingester run in one process, and a Push
// over loopback gRPC costs more than the TSDB append it carries: the distributor
// marshals the request, HTTP/2 frames and copies it, and the ingester copies it again
// (Codec.Unmarshal) and decodes it. So an ingester that joins the ring registers itself
// here under its ring address, and a client of this package whose address is that of a
// registered ingester calls its Push directly. Everything else (other processes, reads,
// health checks) goes over gRPC, so the gRPC Push path is still what every remote
// ingester uses, and -ingester.client.in-process-push=false forces it locally too.
//
// This is safe because the ingester treats the request exactly as it treats one
// decoded by Codec (whose strings alias the receive buffer): it only reads labels and
// copies them into the TSDB's own storage (labels.ScratchBuilder.Labels copies), clones
// the metadata it keeps, never retains the request after Push returns, and does not
// modify shared parts of it (it sorts samples into a copy). The distributor's request
// buffers are per request and not pooled, and it does not touch a sub-request while a
// Push is running.

// LocalPusher is what an in-process ingester offers to the short-circuit.
type LocalPusher interface {
	Push(ctx context.Context, req *prompb.WriteRequest) (*PushResponse, error)
}

var localPushers struct {
	mu sync.RWMutex
	m  map[string]localEntry
}

type localEntry struct {
	p   LocalPusher
	ref int // > 1: several ingesters claim addr (a misconfiguration or a test); use gRPC
}

// RegisterLocalPusher makes p the in-process target of Pushes to addr (its ring
// address). The returned function undoes it. If two pushers register the same address,
// neither is used for it until both unregistered.
func RegisterLocalPusher(addr string, p LocalPusher) (unregister func()) {
	localPushers.mu.Lock()
	defer localPushers.mu.Unlock()
	if localPushers.m == nil {
		localPushers.m = map[string]localEntry{}
	}
	e := localPushers.m[addr]
	e.ref++
	if e.ref == 1 {
		e.p = p
	} else {
		e.p = nil
	}
	localPushers.m[addr] = e
	var once sync.Once
	return func() {
		once.Do(func() {
			localPushers.mu.Lock()
			defer localPushers.mu.Unlock()
			e := localPushers.m[addr]
			e.ref--
			if e.ref <= 0 {
				delete(localPushers.m, addr)
				return
			}
			// The survivor is unknown here; keep gRPC for the address.
			e.p = nil
			localPushers.m[addr] = e
		})
	}
}

func localPusher(addr string) LocalPusher {
	localPushers.mu.RLock()
	defer localPushers.mu.RUnlock()
	return localPushers.m[addr].p
}

// Push calls the ingester in this process when one is registered for the client's
// address (and the short-circuit is enabled), otherwise over gRPC.
func (c *ingesterClient) Push(ctx context.Context, in *prompb.WriteRequest, opts ...grpc.CallOption) (*PushResponse, error) {
	if c.inProcess {
		if p := localPusher(c.addr); p != nil {
			return p.Push(ctx, in)
		}
	}
	return c.PusherClient.Push(ctx, in, opts...)
}
