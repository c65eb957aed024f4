package client

import (
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/rwproto"
)

// unmarshalWriteRequest decodes a remote-write 1.0 WriteRequest for the ingester's
// hot path with the decoder the distributor uses too (pkg/util/rwproto): label names
// and values of series and exemplars alias buf instead of being copied, and labels
// and samples of all series share two arrays.
//
// buf must therefore stay unmodified while req is in use, and whatever outlives the
// request must be copied (the TSDB copies labels into its own storage; the ingester
// clones metadata it keeps). Codec.Unmarshal satisfies this: it decodes from a fresh
// copy of the gRPC message that nothing else references.
func unmarshalWriteRequest(buf []byte, req *prompb.WriteRequest) error {
	return rwproto.Unmarshal(buf, req)
}
