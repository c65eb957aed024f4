package distributor

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/prompb"
)

// rwBuffers is the memory of one remote write 1.0 request that the decoded
// WriteRequest points into: the decompressed body (label strings alias it),
// the series slice and the arena of labels and samples. It is reused across
// requests, which spares allocating and garbage-collecting about 1 MB per
// 2000-series request.
//
// Reuse is safe only once nothing reads the request any more: the HTTP
// handler has answered and every push to the ingesters has returned,
// including pushes to replicas beyond the write quorum that continue after
// the answer. So the buffers are reference counted: the handler holds one
// reference, and send holds one from before it starts pushing until the ring
// reports all pushes finished (DoBatchOptions.Cleanup). Nothing keeps request
// strings beyond that: the ingester copies the labels of new series into its
// TSDB and clones metadata (pkg/ingester), remote ingesters receive a marshalled
// copy, and rejection texts are built as new strings.
type rwBuffers struct {
	refs   atomic.Int32
	body   []byte
	series []prompb.TimeSeries
	arena  seriesArena
}

// maxPooledBody keeps unusually large requests from pinning their buffers.
const maxPooledBody = 8 << 20

var rwBuffersPool = sync.Pool{New: func() any { return new(rwBuffers) }}

func getRWBuffers() *rwBuffers {
	b := rwBuffersPool.Get().(*rwBuffers)
	b.refs.Store(1)
	return b
}

func (b *rwBuffers) acquire() { b.refs.Add(1) }

func (b *rwBuffers) release() {
	switch n := b.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("distributor: remote write buffers released twice")
	}
	if cap(b.body) > maxPooledBody {
		return // let the GC have it
	}
	clear(b.series[:cap(b.series)])
	b.series = b.series[:0]
	b.arena.reset()
	rwBuffersPool.Put(b)
}

type rwBuffersKey struct{}

// withRWBuffers tells send which buffers the request lives in, so it can
// hold them until all its pushes are done.
func withRWBuffers(ctx context.Context, b *rwBuffers) context.Context {
	return context.WithValue(ctx, rwBuffersKey{}, b)
}

func rwBuffersFrom(ctx context.Context) *rwBuffers {
	b, _ := ctx.Value(rwBuffersKey{}).(*rwBuffers)
	return b
}
