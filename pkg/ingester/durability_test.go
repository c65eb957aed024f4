package ingester

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/services"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
)

const (
	helperDirEnv    = "VIGIL_INGESTER_HELPER_DIR"
	helperBaseEnv   = "VIGIL_INGESTER_HELPER_BASE"
	helperFsyncEnv  = "VIGIL_INGESTER_HELPER_FSYNC"
	helperSeries    = 20
	helperAcksToRun = 300
	// Every helperMetadataEvery-th batch changes metadata: it names a new family and
	// changes the HELP of "durable". The others carry the unchanged metadata of
	// "durable", as remote write 2.0 senders do with every request.
	helperMetadataEvery = 7
)

func helperBatch(base int64, i int) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for s := 0; s < helperSeries; s++ {
		req.Timeseries = append(req.Timeseries, series(
			[]string{"__name__", "durable", "series", strconv.Itoa(s)},
			prompb.Sample{Timestamp: base + int64(i)*1000, Value: float64(i)},
		))
	}
	changed := i - i%helperMetadataEvery // the last batch that changed metadata
	req.Metadata = append(req.Metadata, prompb.MetricMetadata{
		MetricFamilyName: "durable", Type: prompb.MetricMetadata_GAUGE, Help: helperHelp(changed),
	})
	if i%helperMetadataEvery == 0 {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{
			MetricFamilyName: helperFamily(i), Type: prompb.MetricMetadata_COUNTER, Help: "Family of batch " + strconv.Itoa(i) + ".", Unit: "seconds",
		})
	}
	return req
}

func helperHelp(batch int) string   { return fmt.Sprintf("Durable gauge, metadata of batch %d.", batch) }
func helperFamily(batch int) string { return fmt.Sprintf("durable_family_%d", batch) }

// TestHelperIngesterProcess is not a test: TestKill9KeepsAcknowledgedWrites re-executes
// the test binary to run it as a child process that pushes until it is SIGKILLed,
// printing "ACK <batch>" after every acknowledged push.
func TestHelperIngesterProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKill9KeepsAcknowledgedWrites")
	}
	base, err := strconv.ParseInt(os.Getenv(helperBaseEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Ring.InstanceID = "helper"
	// Small segments so the kill often lands around a segment rotation too.
	cfg.WALSegmentSize = 64 << 10
	cfg.WALFsyncOnPush = os.Getenv(helperFsyncEnv) == "1"
	ing, err := New(cfg, nil, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), ing); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		resp, err := ing.Push(ctxFor("durable"), helperBatch(base, i))
		if err != nil || len(resp.Rejections) != 0 {
			fmt.Printf("ERR %d %v %v\n", i, err, resp)
			os.Exit(2)
		}
		// os.Stdout is unbuffered: the parent sees the line as soon as Push returned.
		fmt.Printf("ACK %d\n", i)
	}
}

func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	for _, fsync := range []bool{false, true} {
		t.Run(fmt.Sprintf("fsync-on-push=%v", fsync), func(t *testing.T) { testKill9(t, fsync) })
	}
}

func testKill9(t *testing.T, fsync bool) {
	dir := t.TempDir()
	base := time.Now().Add(-10 * time.Minute).UnixMilli()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperIngesterProcess$", "-test.count=1")
	fsyncEnv := "0"
	if fsync {
		fsyncEnv = "1"
	}
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, helperBaseEnv+"="+strconv.FormatInt(base, 10), helperFsyncEnv+"="+fsyncEnv)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	lastAck := -1
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERR") {
			t.Fatalf("helper failed: %s", line)
		}
		n, ok := strings.CutPrefix(line, "ACK ")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("bad helper line %q", line)
		}
		lastAck = i
		if i >= helperAcksToRun && !killed {
			// SIGKILL mid-stream: the child is pushing the next batch right now.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited before being killed (last ack %d)", lastAck)
	}

	// Reopen the data the way a restarted ingester does and check every acked batch.
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Ring.InstanceID = "reopen"
	ing := startIngester(t, cfg, nil, nil)
	c := serveGRPC(t, ing)
	got := querySeries(t, c, "durable", base, base+int64(lastAck+10)*1000)
	if len(got) != helperSeries {
		t.Fatalf("found %d series after kill -9, want %d", len(got), helperSeries)
	}
	for _, s := range got {
		if len(s.samples) < lastAck+1 {
			t.Fatalf("series %s has %d samples, but %d batches were acknowledged", s.lset, len(s.samples), lastAck+1)
		}
		for i := 0; i <= lastAck; i++ {
			if s.samples[i].t != base+int64(i)*1000 || s.samples[i].v != float64(i) {
				t.Fatalf("series %s sample %d = %+v, want t=%d v=%d", s.lset, i, s.samples[i], base+int64(i)*1000, i)
			}
		}
	}

	// Metadata acknowledged with the same pushes survived too: every family named by an
	// acknowledged batch, and the HELP of "durable" as of the last acknowledged change
	// (or of a later, unacknowledged one that made it to disk before the kill).
	md := queryMetadata(t, c, "durable")
	for i := 0; i <= lastAck; i += helperMetadataEvery {
		m, ok := md[helperFamily(i)]
		if !ok || m.Type != "counter" || m.Unit != "seconds" || m.Help != "Family of batch "+strconv.Itoa(i)+"." {
			t.Fatalf("metadata of %s acknowledged in batch %d but after kill -9 it is %+v (present: %v); %d families survived", helperFamily(i), i, m, ok, len(md))
		}
	}
	lastChange := lastAck - lastAck%helperMetadataEvery
	okHelp := map[string]bool{helperHelp(lastChange): true, helperHelp(lastChange + helperMetadataEvery): true}
	if m := md["durable"]; !okHelp[m.Help] || m.Type != "gauge" {
		t.Fatalf("metadata of durable after kill -9 = %+v, want the HELP of batch %d (last acknowledged change)", m, lastChange)
	}
	t.Logf("all %d acknowledged batches (%d samples, %d metric families) survived kill -9", lastAck+1, (lastAck+1)*helperSeries, len(md))
}

// queryMetadata reads the tenant's metadata the way the querier does.
func queryMetadata(t testing.TB, c client.IngesterClient, tenant string) map[string]metadatapb.Meta {
	t.Helper()
	stream, err := c.MetricMetadata(ctxFor(tenant), &metadatapb.MetricMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]metadatapb.Meta{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("receive metadata: %v", err)
		}
		md := resp.GetMetadata()
		if md == nil {
			continue
		}
		for name, ms := range md.Metadata {
			if len(ms.Metas) != 1 {
				t.Fatalf("metadata of %s: %d entries, want 1", name, len(ms.Metas))
			}
			out[name] = ms.Metas[0]
		}
	}
}

func TestPushWithWALFsync(t *testing.T) {
	cfg := testConfig(t)
	cfg.WALFsyncOnPush = true
	ing := startIngester(t, cfg, fixedLimits{ooo: time.Hour}, nil)
	base := time.Now().UnixMilli()
	// The second sample is out of order and goes to the WBL, which is synced too.
	resp, err := ing.Push(ctxFor("t1"), &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series([]string{"__name__", "a"}, prompb.Sample{Timestamp: base, Value: 1}, prompb.Sample{Timestamp: base - 1000, Value: 2}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 2 {
		t.Fatalf("unexpected response %s", resp)
	}
	if err := ing.getTSDB("t1").syncWAL(); err != nil {
		t.Fatal(err)
	}
}
