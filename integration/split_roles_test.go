package integration

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestRolesAsSeparateProcesses: the scale-out shape — distributor, ingester, querier and
// store-gateway each in their own process, sharing one bucket and finding each other through
// the memberlist ring. Metrics written to the distributor are queryable on the querier, from
// the ingester and, after a flush, from the store-gateway; traces likewise.
func TestRolesAsSeparateProcesses(t *testing.T) {
	bucketDir := t.TempDir()
	storage := "-storage.filesystem.dir=" + bucketDir
	ing := startVigil(t, t.TempDir(), "-target=ingester", storage, "-ingester.ring.instance-id=ing-1")
	join := fmt.Sprintf("-memberlist.join=127.0.0.1:%d", ing.Memberlist)
	sg := startVigil(t, t.TempDir(), "-target=store-gateway", storage, join)
	dist := startVigil(t, t.TempDir(), "-target=distributor", storage, join)
	q := startVigil(t, t.TempDir(), "-target=querier", storage, join,
		fmt.Sprintf("-querier.store-gateway-addresses=127.0.0.1:%d", sg.GRPCPort), "-traces.querier.block-sync-interval=1s")

	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  series("__name__", "split_probe", "role", "test"),
		Samples: []prompb.Sample{{Timestamp: now.Add(-time.Minute).UnixMilli(), Value: 1}, {Timestamp: now.UnixMilli(), Value: 2}},
	}}}
	c := writeClient(t, dist, "/api/v1/push", remoteapi.WriteV1MessageType, "")
	testutil.Eventually(t, time.Minute, func() error { // until the distributor sees the ingester in the ring
		_, err := storeV1(ctx, c, req)
		return err
	})
	api := queryAPI(t, q, "/prometheus", "")
	check := func() error {
		v, _, err := api.Query(ctx, `count_over_time(split_probe[5m])`, now)
		if err != nil {
			return err
		}
		if vec := v.(model.Vector); len(vec) != 1 || vec[0].Value != 2 {
			return fmt.Errorf("count_over_time(split_probe[5m]) = %v, want 2", v)
		}
		return nil
	}
	testutil.Eventually(t, time.Minute, check)

	// Traces through the distributor, read on the querier.
	id := traceIDN(4242)
	if err := postOTLPTraces(ctx, dist, otlpTraceBody(t, id, "split-svc", now.Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, func() error {
		body, code, err := jaegerTrace(q, hexID(id))
		if err != nil || code != http.StatusOK || spanCount(body) != 2 {
			return fmt.Errorf("trace on the querier: %d, %d spans, %v", code, spanCount(body), err)
		}
		return nil
	})

	// Flush the ingester to the bucket and stop it: the store-gateway serves the samples.
	post(t, ing.URL("/ingester/flush"))
	post(t, ing.URL("/ingester/flush-traces"))
	ing.stop()
	post(t, sg.URL("/store-gateway/sync"))
	testutil.Eventually(t, time.Minute, check)
	testutil.Eventually(t, time.Minute, func() error {
		body, code, err := jaegerTrace(q, hexID(id))
		if err != nil || code != http.StatusOK || spanCount(body) != 2 {
			return fmt.Errorf("trace from the bucket on the querier: %d, %d spans, %v", code, spanCount(body), err)
		}
		return nil
	})
}
