package receiver

import (
	"context"

	"github.com/grafana/dskit/ring"
	"github.com/prometheus/prometheus/prompb"
	"github.com/vigil-obs/vigil/pkg/distributor"
	"github.com/vigil-obs/vigil/pkg/tracestore/derived"
	"github.com/vigil-obs/vigil/pkg/util/validation"
)

// Compile-time checks of the wiring cmd/vigil does, so a change on either
// side of these consumer-declared interfaces breaks this package's build
// rather than the binary's.
var (
	_ Limits           = (*validation.Overrides)(nil)
	_ ring.DoBatchRing = (*ring.Ring)(nil)
	_ SpanConsumer     = (*derived.Generator)(nil)
	_                  = func(d *distributor.Distributor) (derived.MetricsPusher, ring.DoBatchRing) {
		return derived.MetricsPusherFunc(func(ctx context.Context, req *prompb.WriteRequest) error {
			_, err := d.PushMetrics(ctx, req)
			return err
		}), d.Ring()
	}
)
