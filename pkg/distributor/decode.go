package distributor

import (
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/rwproto"
)

// The remote write 1.0 decoder is shared with the ingester's gRPC codec
// (pkg/util/rwproto); what follows fits it to the handler and rwBuffers.

// unmarshalWriteRequestNoCopy decodes a remote write 1.0 request like
// prompb.WriteRequest.Unmarshal, except that label names and values are not
// copied: they point into buf. Label strings are most of a request's bytes
// and allocations, so this cuts the decode cost several times.
//
// buf must not be modified or reused while req (or anything derived from its
// labels without copying) is alive. The remote write path guarantees that by
// decoding into a buffer of the request's own that nothing else references.
func unmarshalWriteRequestNoCopy(buf []byte, req *prompb.WriteRequest) error {
	return rwproto.Unmarshal(buf, req)
}

// seriesArena is the memory of the series' labels and samples that rwBuffers
// keeps across requests.
type seriesArena struct{ dec rwproto.Decoder }

// reset makes the arena reusable for another request. Slices handed out
// before must no longer be in use.
func (a *seriesArena) reset() { a.dec.Reset() }

// unmarshalWriteRequestInto is unmarshalWriteRequestNoCopy with the series'
// labels and samples taken from a, and req.Timeseries from tsBuf when it is
// large enough (both possibly reused from an earlier request).
func unmarshalWriteRequestInto(buf []byte, req *prompb.WriteRequest, a *seriesArena, tsBuf []prompb.TimeSeries) error {
	req.Timeseries = tsBuf[:0]
	return a.dec.Unmarshal(buf, req)
}
