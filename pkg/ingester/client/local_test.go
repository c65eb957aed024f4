package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/gogo/status"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc/codes"
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
	unregister := RegisterLocal(addr, Local{Pusher: local})
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
	unregisterOther := RegisterLocal(addr, Local{Pusher: other})
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
	if lookupLocal(addr).Pusher != nil {
		t.Fatal("registry not empty after unregistering")
	}
}

// reusingStore sends n series, reusing one message and one chunk buffer for all of them
// the way storeapi.Server does, so a receiver that kept references instead of copying
// would see the last series' bytes everywhere. failAfter > 0 makes Series fail after
// that many messages; sendErr records what Send returned when the receiver went away.
type reusingStore struct {
	storepb.StoreServer
	n, failAfter int
	sendErr      chan error
}

func (s *reusingStore) Series(_ *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	tenant, err := user.ExtractOrgID(srv.Context())
	if err != nil {
		return err
	}
	data := make([]byte, 1)
	series := &storepb.Series{Chunks: []storepb.AggrChunk{{Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: data}}}}
	resp := storepb.NewSeriesResponse(series)
	for i := range s.n {
		if s.failAfter > 0 && i == s.failAfter {
			return status.Error(codes.ResourceExhausted, "store says no")
		}
		series.Labels = ZLabelsFromPromLabels(labels.FromStrings("__name__", "up", "i", strconv.Itoa(i), "tenant", tenant))
		data[0] = byte(i)
		if err := srv.Send(resp); err != nil {
			if s.sendErr != nil {
				s.sendErr <- err
			}
			return err
		}
	}
	return srv.Send(storepb.NewWarnSeriesResponse(errors.New("partial")))
}

// copyingConsumer is a LocalSeriesConsumer that keeps copies, as the querier does.
type copyingConsumer struct {
	got   []string
	stop  error
	calls int
}

func (c *copyingConsumer) ConsumeSeriesResponse(r *storepb.SeriesResponse) error {
	c.calls++
	if c.stop != nil {
		return c.stop
	}
	if s := r.GetSeries(); s != nil {
		c.got = append(c.got, fmt.Sprintf("%s=%d", PromLabelsFromZLabels(s.Labels).Get("i"), s.Chunks[0].Raw.Data[0]))
	}
	return nil
}

// TestInProcessSeries checks the read short-circuit: Series of a client whose address
// belongs to a registered in-process store runs that store directly, delivers every
// message (to consumers by object, to plain receivers as a copy), ends with io.EOF or
// the store's own status error, and unblocks the store when the receiver stops.
func TestInProcessSeries(t *testing.T) {
	addr, _ := startServer(t, ServerOptions()...)
	ctx := user.InjectOrgID(context.Background(), "team-a")
	c, err := New(addr, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	store := &reusingStore{n: 3}
	unregister := RegisterLocal(addr, Local{Store: store})
	t.Cleanup(unregister)

	t.Run("plain receiver gets copies", func(t *testing.T) {
		stream, err := c.Series(ctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := r.GetSeries(); s != nil {
				got = append(got, fmt.Sprintf("%s=%d", PromLabelsFromZLabels(s.Labels).Get("i"), s.Chunks[0].Raw.Data[0]))
			}
		}
		if want := "[0=0 1=1 2=2]"; fmt.Sprint(got) != want {
			t.Fatalf("got %v, want %s (from the in-process store, intact)", got, want)
		}
	})

	t.Run("consumer", func(t *testing.T) {
		stream, err := c.Series(ctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cons := &copyingConsumer{}
		for {
			err := stream.RecvMsg(cons)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if want := "[0=0 1=1 2=2]"; fmt.Sprint(cons.got) != want || cons.calls != 4 {
			t.Fatalf("got %v in %d calls, want %s and a warning", cons.got, cons.calls, want)
		}
	})

	t.Run("store error", func(t *testing.T) {
		store.failAfter = 2
		defer func() { store.failAfter = 0 }()
		stream, err := c.Series(ctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if err = stream.RecvMsg(&copyingConsumer{}); err != nil {
				break
			}
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("err = %v, want the store's ResourceExhausted status", err)
		}
	})

	t.Run("consumer stops", func(t *testing.T) {
		store.sendErr = make(chan error, 1)
		defer func() { store.sendErr = nil }()
		stream, err := c.Series(ctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		stop := errors.New("series limit")
		if err := stream.RecvMsg(&copyingConsumer{stop: stop}); !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the consumer's", err)
		}
		// The store saw the consumer's error from Send and stopped.
		if err := <-store.sendErr; !errors.Is(err, stop) {
			t.Fatalf("store's Send returned %v, want the consumer's error", err)
		}
		if err := stream.RecvMsg(&copyingConsumer{}); !errors.Is(err, io.EOF) {
			t.Fatalf("RecvMsg after the end = %v, want io.EOF", err)
		}
	})

	t.Run("receiver cancels", func(t *testing.T) {
		store.sendErr = make(chan error, 1)
		defer func() { store.sendErr = nil }()
		cctx, cancel := context.WithCancel(ctx)
		stream, err := c.Series(cctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		// The store's next Send must fail instead of blocking forever.
		select {
		case err := <-store.sendErr:
			if status.Code(err) != codes.Canceled {
				t.Fatalf("store's Send returned %v, want Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("store still blocked in Send after the receiver cancelled")
		}
	})

	t.Run("disabled", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.InProcessReads = false
		cOff, err := New(addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer cOff.Close()
		stream, err := cOff.Series(ctx, &storepb.SeriesRequest{MinTime: 5, MaxTime: 6})
		if err != nil {
			t.Fatal(err)
		}
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		// The gRPC server's fake answers with the request's time range.
		if s := r.GetSeries(); s == nil || s.Chunks[0].MinTime != 5 {
			t.Fatalf("with in-process reads disabled, Series must go over gRPC; got %v", r)
		}
	})
}
