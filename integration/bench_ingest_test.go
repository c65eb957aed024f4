package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"
)

// ingestWorkload is a scrape-like stream: every round carries one sample for each series,
// 15s after the previous round, in requests of 2000 series (Prometheus' default
// max_samples_per_send).
type ingestWorkload struct {
	series, rounds int
	requests       [][][]byte // [round][request] snappy-compressed RW1 bodies
}

// realisticLabels gives each series the label shape of a Kubernetes scrape: 100 metric names
// over series/100 targets, 8 labels each.
func realisticLabels(i, nSeries int) []prompb.Label {
	metric := i % 100
	target := i / 100
	return []prompb.Label{
		{Name: "__name__", Value: fmt.Sprintf("app_metric_%02d_total", metric)},
		{Name: "cluster", Value: "prod-eu-1"},
		{Name: "container", Value: "app"},
		{Name: "instance", Value: fmt.Sprintf("10.%d.%d.%d:8080", target/65536%256, target/256%256, target%256)},
		{Name: "job", Value: fmt.Sprintf("service-%d", target%50)},
		{Name: "namespace", Value: fmt.Sprintf("ns-%d", target%20)},
		{Name: "pod", Value: fmt.Sprintf("service-%d-7d9f8c6b5-%05d", target%50, target)},
		{Name: "status", Value: []string{"200", "404", "500"}[metric%3]},
	}
}

func newIngestWorkload(tb testing.TB, nSeries, rounds int, start time.Time) *ingestWorkload {
	tb.Helper()
	const perRequest = 2000
	w := &ingestWorkload{series: nSeries, rounds: rounds}
	lsets := make([][]prompb.Label, nSeries)
	values := make([]float64, nSeries)
	for i := range lsets {
		lsets[i] = realisticLabels(i, nSeries)
	}
	rnd := rand.New(rand.NewSource(1))
	for r := 0; r < rounds; r++ {
		ts := start.Add(time.Duration(r) * 15 * time.Second).UnixMilli()
		var reqs [][]byte
		for lo := 0; lo < nSeries; lo += perRequest {
			req := &prompb.WriteRequest{}
			for i := lo; i < min(lo+perRequest, nSeries); i++ {
				values[i] += float64(rnd.Intn(100)) // counters grow by a realistic, irregular step
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: lsets[i], Samples: []prompb.Sample{{Timestamp: ts, Value: values[i]}}})
			}
			raw, err := proto.Marshal(req)
			if err != nil {
				tb.Fatal(err)
			}
			reqs = append(reqs, snappy.Encode(nil, raw))
		}
		w.requests = append(w.requests, reqs)
	}
	return w
}

// send pushes every round in order, each round's requests over `shards` concurrent senders
// (as Prometheus' queue manager shards do), with Prometheus' own remote-write client.
func (w *ingestWorkload) send(tb testing.TB, c remote.WriteClient, shards int) {
	tb.Helper()
	ctx := context.Background()
	for _, round := range w.requests {
		var wg sync.WaitGroup
		errs := make(chan error, len(round))
		next := make(chan []byte)
		for s := 0; s < shards; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for body := range next {
					if _, err := c.Store(ctx, body, 0); err != nil {
						errs <- err
					}
				}
			}()
		}
		for _, body := range round {
			next <- body
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			tb.Fatalf("remote write: %v", err)
		}
	}
}

// ingestTarget is one receiver under measurement, running as its own process.
type ingestTarget struct {
	name     string
	pid      int
	client   remote.WriteClient
	pprofURL string // CPU profile endpoint, when the target has one
	baseURL  string
	dataDir  string
}

// profileWhile records a CPU profile of the target while the workload runs when
// VIGIL_BENCH_PROFILE names an output file; it returns the function that ends it.
func profileWhile(tb testing.TB, tgt *ingestTarget) func() {
	out := os.Getenv("VIGIL_BENCH_PROFILE")
	if out == "" || tgt.pprofURL == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(tgt.pprofURL + "?seconds=20")
		if err != nil {
			tb.Logf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			tb.Logf("profile: %v", err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

func startPromReceiver(tb testing.TB) *ingestTarget {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "promreceiver")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/vigil-obs/vigil/bench/promreceiver").CombinedOutput(); err != nil {
		tb.Fatalf("build promreceiver: %v\n%s", err, out)
	}
	dir := tb.TempDir()
	cmd := exec.Command(bin, "-dir", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("promreceiver address: %v", err)
	}
	in := &instance{HTTPPort: mustPort(tb, addr[:len(addr)-1])}
	return &ingestTarget{name: "prometheus", pid: cmd.Process.Pid, client: writeClient(tb, in, "/api/v1/write", remoteapi.WriteV1MessageType, ""), baseURL: in.URL(""), dataDir: dir}
}

func startVigilTarget(tb testing.TB, dataDir string) (*ingestTarget, *instance) {
	tb.Helper()
	// The reference has no per-tenant limits; lift Vigil's as an operator would for this load.
	in := startVigil(tb, dataDir, benchLimitFlags...)
	return &ingestTarget{name: "vigil", pid: in.cmd.Process.Pid, client: writeClient(tb, in, "/api/v1/push", remoteapi.WriteV1MessageType, ""), pprofURL: in.URL("/debug/pprof/profile")}, in
}

// benchLimitFlags turn off per-tenant ingestion limits for benchmarks.
var benchLimitFlags = []string{"-distributor.ingestion-rate-limit=0", "-ingester.max-global-series-per-user=0", "-ingester.max-global-series-per-metric=0"}

func mustPort(tb testing.TB, hostport string) int {
	for i := len(hostport) - 1; i >= 0; i-- {
		if hostport[i] == ':' {
			p, err := strconv.Atoi(hostport[i+1:])
			if err != nil {
				tb.Fatal(err)
			}
			return p
		}
	}
	tb.Fatalf("no port in %q", hostport)
	return 0
}

type ingestResult struct {
	cpuPerMillion   float64 // CPU seconds per million samples
	bytesPerSeries  float64 // RSS growth per active series
	samplesPerCPU_s float64
}

func measureIngest(tb testing.TB, tgt *ingestTarget, w *ingestWorkload) ingestResult {
	tb.Helper()
	// Warm the process (first connection, lazily built structures) with the first round,
	// which also creates every series; memory is then read after all rounds.
	rss0, err := procRSSBytes(tgt.pid)
	if err != nil {
		tb.Fatal(err)
	}
	cpu0, _ := procCPUSeconds(tgt.pid)
	stopProfile := profileWhile(tb, tgt)
	w.send(tb, tgt.client, 4)
	stopProfile()
	cpu1, err := procCPUSeconds(tgt.pid)
	if err != nil {
		tb.Fatal(err)
	}
	rss1, _ := procRSSBytes(tgt.pid)
	samples := float64(w.series * w.rounds)
	return ingestResult{
		cpuPerMillion:   (cpu1 - cpu0) / samples * 1e6,
		bytesPerSeries:  float64(rss1-rss0) / float64(w.series),
		samplesPerCPU_s: samples / (cpu1 - cpu0),
	}
}

// BenchmarkIngestSideBySide: CPU seconds per million samples and memory per active series
// through the HTTP remote-write path, Vigil (-target=all, RF 1) against Prometheus' own
// remote-write receiver over tsdb.DB, same workload, same run. Set VIGIL_BENCH_SERIES and
// VIGIL_BENCH_ROUNDS to change the size (defaults: 100k series, 20 rounds = 2M samples).
func BenchmarkIngestSideBySide(b *testing.B) {
	nSeries := envInt("VIGIL_BENCH_SERIES", 100_000)
	rounds := envInt("VIGIL_BENCH_ROUNDS", 20)
	w := newIngestWorkload(b, nSeries, rounds, time.Now().Add(-time.Duration(rounds)*15*time.Second))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		prom := measureIngest(b, startPromReceiver(b), w)
		vt, _ := startVigilTarget(b, b.TempDir())
		vig := measureIngest(b, vt, w)
		b.ReportMetric(vig.cpuPerMillion, "vigil-cpu-s/Msamples")
		b.ReportMetric(prom.cpuPerMillion, "prom-cpu-s/Msamples")
		b.ReportMetric(vig.cpuPerMillion/prom.cpuPerMillion, "cpu-ratio")
		b.ReportMetric(vig.bytesPerSeries, "vigil-rss-B/series")
		b.ReportMetric(prom.bytesPerSeries, "prom-rss-B/series")
		b.ReportMetric(vig.bytesPerSeries/prom.bytesPerSeries, "mem-ratio")
		fmt.Printf("ingest %d series x %d rounds: vigil %.2f CPU-s/M samples, prometheus %.2f (ratio %.2f); RSS/series vigil %.0f B, prometheus %.0f B (ratio %.2f)\n",
			nSeries, rounds, vig.cpuPerMillion, prom.cpuPerMillion, vig.cpuPerMillion/prom.cpuPerMillion,
			vig.bytesPerSeries, prom.bytesPerSeries, vig.bytesPerSeries/prom.bytesPerSeries)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
