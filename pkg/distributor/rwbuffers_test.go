package distributor

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// TestRemoteWriteBuffersOutliveSlowReplica checks the reuse of remote write
// buffers: a replica beyond the write quorum still reads a request after its
// HTTP answer, while later requests run; it must see the request intact, so
// the buffers may only be reused once that push returned.
func TestRemoteWriteBuffersOutliveSlowReplica(t *testing.T) {
	env := newTestEnv(t, envOptions{ingesters: 3, rf: 3})
	slow := env.ingesters[2]
	block := make(chan struct{})
	slow.mu.Lock()
	slow.block = block
	slow.mu.Unlock()
	released := false
	t.Cleanup(func() {
		if !released {
			close(block)
		}
	})

	const requests, perRequest = 30, 50
	now := time.Now().UnixMilli()
	want := map[string]float64{}
	for r := 0; r < requests; r++ {
		req := &prompb.WriteRequest{}
		for i := 0; i < perRequest; i++ {
			// Different lengths per request, so reused memory shows as garbage.
			ls := series("__name__", fmt.Sprintf("metric_%d", r), "req", fmt.Sprint(r), "series", fmt.Sprintf("%0*d", 1+r%7, i))
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: float64(r*1000 + i), Timestamp: now}}})
			want[labelsString(ls)] = float64(r*1000 + i)
		}
		code, body, _ := env.post(t, "/api/v1/push", map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}, bytes.NewReader(encodeV1(t, req)))
		if code != http.StatusNoContent {
			t.Fatalf("request %d: status %d: %s", r, code, body)
		}
	}
	close(block)
	released = true

	deadline := time.Now().Add(10 * time.Second)
	for {
		slow.mu.Lock()
		n := len(slow.pushes)
		slow.mu.Unlock()
		if n == requests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow replica got %d of %d pushes", n, requests)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, fi := range env.ingesters {
		got := fi.series()
		if len(got) != len(want) {
			t.Fatalf("ingester %d has %d series, want %d", i, len(got), len(want))
		}
		for k, ts := range got {
			v, ok := want[k]
			if !ok || len(ts.Samples) != 1 || ts.Samples[0].Value != v {
				t.Fatalf("ingester %d: series %s with samples %v is not what was sent", i, k, ts.Samples)
			}
		}
	}
}
