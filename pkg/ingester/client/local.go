package client

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// In-process short-circuit of Push and Series.
//
// With -target=all the distributor and the ingester run in one process, and a Push
// over loopback gRPC costs more than the TSDB append it carries: the distributor
// marshals the request, HTTP/2 frames and copies it, and the ingester copies it again
// (Codec.Unmarshal) and decodes it. So an ingester that joins the ring registers itself
// here under its ring address, and a client of this package whose address is that of a
// registered ingester calls its Push directly. Everything else (other processes,
// label, exemplar and metadata reads, health checks) goes over gRPC, so the gRPC path
// is still what every remote ingester uses, and -ingester.client.in-process-push=false
// forces it locally too.
//
// Series, the read that carries the data of every query, is short-circuited the same way
// (-querier.client.in-process-reads): over loopback gRPC the ingester marshals every
// chunk, HTTP/2 frames it, and the querier copies and decodes it again, which made
// PromQL over head data ~20% slower than Prometheus' engine over its own head.
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

// Local is what an ingester in this process offers to clients of its address. Either
// part may be nil.
type Local struct {
	Pusher LocalPusher
	// Store serves Series to in-process queriers (see localSeriesStream).
	Store storepb.StoreServer
}

var locals struct {
	mu sync.RWMutex
	m  map[string]localEntry
}

type localEntry struct {
	l   Local
	ref int // > 1: several ingesters claim addr (a misconfiguration or a test); use gRPC
}

// RegisterLocal makes l the in-process target of calls to addr (its ring address). The
// returned function undoes it. If two ingesters register the same address, neither is
// used for it until both unregistered.
func RegisterLocal(addr string, l Local) (unregister func()) {
	locals.mu.Lock()
	defer locals.mu.Unlock()
	if locals.m == nil {
		locals.m = map[string]localEntry{}
	}
	e := locals.m[addr]
	e.ref++
	if e.ref == 1 {
		e.l = l
	} else {
		e.l = Local{}
	}
	locals.m[addr] = e
	var once sync.Once
	return func() {
		once.Do(func() {
			locals.mu.Lock()
			defer locals.mu.Unlock()
			e := locals.m[addr]
			e.ref--
			if e.ref <= 0 {
				delete(locals.m, addr)
				return
			}
			// The survivor is unknown here; keep gRPC for the address.
			e.l = Local{}
			locals.m[addr] = e
		})
	}
}

func lookupLocal(addr string) Local {
	locals.mu.RLock()
	defer locals.mu.RUnlock()
	return locals.m[addr].l
}

// Push calls the ingester in this process when one is registered for the client's
// address (and the short-circuit is enabled), otherwise over gRPC.
func (c *ingesterClient) Push(ctx context.Context, in *prompb.WriteRequest, opts ...grpc.CallOption) (*PushResponse, error) {
	if c.inProcessPush {
		if p := lookupLocal(c.addr).Pusher; p != nil {
			return p.Push(ctx, in)
		}
	}
	return c.PusherClient.Push(ctx, in, opts...)
}

// Series calls the ingester in this process when one is registered for the client's
// address (and in-process reads are enabled), otherwise over gRPC.
func (c *ingesterClient) Series(ctx context.Context, in *storepb.SeriesRequest, opts ...grpc.CallOption) (storepb.Store_SeriesClient, error) {
	if c.inProcessReads {
		if s := lookupLocal(c.addr).Store; s != nil {
			return newLocalSeriesStream(ctx, s, in), nil
		}
	}
	return c.StoreClient.Series(ctx, in, opts...)
}

// LocalSeriesConsumer is a receive target (the m of RecvMsg) that can take a
// SeriesResponse as an object instead of as bytes, and any number of them in one RecvMsg
// call. A response and everything it points to are only valid during the call: the
// server reuses its buffers for the next message, so the consumer copies what it keeps
// (chunk bytes included).
type LocalSeriesConsumer interface {
	ConsumeSeriesResponse(*storepb.SeriesResponse) error
}

// localSeriesStream serves a Series call from a StoreServer of this process: no
// marshalling, no HTTP/2 framing, no copy of each message into a receive buffer.
//
// A LocalSeriesConsumer receives the whole answer in its first RecvMsg: the server runs
// in the caller's goroutine and every Send is a call into the consumer, so there is not
// even a goroutine handoff per message (under CPU contention each handoff waits for the
// scheduler). Other receivers (e.g. a plain *storepb.SeriesResponse) get one marshalled
// copy per RecvMsg, as over gRPC, from the server running in its own goroutine; Send
// then blocks until the message is consumed, because the server reuses its memory.
type localSeriesStream struct {
	ctx    context.Context
	cancel context.CancelFunc
	srv    storepb.StoreServer
	req    *storepb.SeriesRequest
	ended  bool // the answer was delivered to a consumer in full (or failed)

	consume func(*storepb.SeriesResponse) error // set while delivering to a consumer

	// One message at a time to other receivers; msgs is nil until the goroutine runs.
	msgs chan *storepb.SeriesResponse
	acks chan struct{}
	done chan struct{} // closed when Series returned; err is its result
	err  error
}

func newLocalSeriesStream(ctx context.Context, srv storepb.StoreServer, req *storepb.SeriesRequest) *localSeriesStream {
	ctx, cancel := context.WithCancel(ctx)
	return &localSeriesStream{ctx: ctx, cancel: cancel, srv: srv, req: req}
}

// RecvMsg implements grpc.ClientStream. It returns io.EOF after the last message.
func (s *localSeriesStream) RecvMsg(m any) error {
	if s.ended {
		return io.EOF
	}
	if c, ok := m.(LocalSeriesConsumer); ok && s.msgs == nil {
		s.ended = true
		s.consume = c.ConsumeSeriesResponse
		err := s.srv.Series(s.req, localSeriesServer{s})
		s.cancel()
		if err != nil {
			return err
		}
		return io.EOF
	}
	if s.msgs == nil {
		s.msgs, s.acks, s.done = make(chan *storepb.SeriesResponse), make(chan struct{}), make(chan struct{})
		go func() {
			defer close(s.done)
			s.err = s.srv.Series(s.req, localSeriesServer{s})
		}()
	}
	select {
	case resp := <-s.msgs:
		err := deliverSeriesResponse(resp, m)
		s.acks <- struct{}{}
		if err != nil {
			s.cancel()
			return err
		}
		return nil
	case <-s.done:
		// Send waits for every message to be consumed, so none is pending here.
		s.cancel()
		if s.err != nil {
			return s.err
		}
		return io.EOF
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}

func deliverSeriesResponse(resp *storepb.SeriesResponse, m any) error {
	if c, ok := m.(LocalSeriesConsumer); ok {
		return c.ConsumeSeriesResponse(resp)
	}
	b, err := resp.Marshal()
	if err != nil {
		return fmt.Errorf("marshal series response: %w", err)
	}
	u, ok := m.(interface{ Unmarshal([]byte) error })
	if !ok {
		return fmt.Errorf("in-process series stream cannot receive into %T", m)
	}
	return u.Unmarshal(b)
}

// Recv implements storepb.Store_SeriesClient.
func (s *localSeriesStream) Recv() (*storepb.SeriesResponse, error) {
	m := new(storepb.SeriesResponse)
	if err := s.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *localSeriesStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (s *localSeriesStream) Trailer() metadata.MD         { return metadata.MD{} }
func (s *localSeriesStream) CloseSend() error             { return nil }
func (s *localSeriesStream) Context() context.Context     { return s.ctx }
func (s *localSeriesStream) SendMsg(any) error {
	return status.Error(codes.Internal, "Series takes no client messages after the request")
}

// localSeriesServer is the server side of a localSeriesStream.
type localSeriesServer struct{ s *localSeriesStream }

// Send hands resp to the receiver and returns once it has been consumed.
func (l localSeriesServer) Send(resp *storepb.SeriesResponse) error {
	if err := l.s.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if l.s.consume != nil {
		return l.s.consume(resp)
	}
	select {
	case l.s.msgs <- resp:
	case <-l.s.ctx.Done():
		return status.FromContextError(l.s.ctx.Err()).Err()
	}
	<-l.s.acks // RecvMsg always acknowledges a message it took
	return nil
}

func (l localSeriesServer) Context() context.Context { return l.s.ctx }
func (l localSeriesServer) SendMsg(m any) error {
	resp, ok := m.(*storepb.SeriesResponse)
	if !ok {
		return status.Errorf(codes.Internal, "series stream cannot send %T", m)
	}
	return l.Send(resp)
}
func (localSeriesServer) RecvMsg(any) error            { return io.EOF }
func (localSeriesServer) SetHeader(metadata.MD) error  { return nil }
func (localSeriesServer) SendHeader(metadata.MD) error { return nil }
func (localSeriesServer) SetTrailer(metadata.MD)       {}
