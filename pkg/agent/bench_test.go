package agent

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-obs/vigil/pkg/ebpf"
)

// loadHelper serves HTTP and loads itself at HELPER_RATE requests/s (0 =
// as fast as 8 clients can) for HELPER_SECONDS, then prints
// "result <requests> <p50 µs> <p99 µs> <cpu µs> <elapsed µs>".
func loadHelper() error {
	rate, _ := strconv.Atoi(os.Getenv("HELPER_RATE"))
	secs, _ := strconv.ParseFloat(os.Getenv("HELPER_SECONDS"), 64)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	// VIGIL_BENCH_HANDLER_WAIT makes each request wait like a service that calls a
	// database or another service; by default the handler answers at once, the worst
	// case for relative latency overhead.
	wait, _ := time.ParseDuration(os.Getenv("VIGIL_BENCH_HANDLER_WAIT"))
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait > 0 {
			time.Sleep(wait)
		}
		io.WriteString(w, "ok")
	}))
	const workers = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	url := "http://" + l.Addr().String() + "/items/"
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	// Requests follow a fixed schedule (request i is due at start+i/rate)
	// rather than a ticker: Go's timers are only as fine as the runtime's
	// idle poll (about 1ms), so a ticker silently drops ticks above ~1k/s,
	// while a late worker here catches up and the rate stays the one asked.
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	var firstErr error
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	stop := start.Add(time.Duration(secs * float64(time.Second)))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for {
				i := next.Add(1) - 1
				if rate > 0 {
					due := start.Add(time.Duration(i) * interval)
					if !due.Before(stop) {
						break
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
				} else if !time.Now().Before(stop) {
					break
				}
				t0 := time.Now()
				resp, err := client.Get(url + strconv.FormatInt(i, 10))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return fmt.Errorf("request: %w", firstErr)
	}
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) int64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)].Microseconds()
	}
	fmt.Printf("result %d %d %d %d %d\n", len(lat), pct(0.50), pct(0.99),
		(cpuTime(ru1) - cpuTime(ru0)).Microseconds(), elapsed.Microseconds())
	return nil
}

func cpuTime(ru syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadResult is what the load helper measured of itself: its CPU includes
// the in-kernel cost the agent's programs add to its syscalls.
type loadResult struct {
	requests     int
	p50us, p99us float64
	cpu, elapsed time.Duration
}

func runLoad(b *testing.B, rate int, secs float64) loadResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	// The load's own garbage collection sets its p99 (about 1ms at 5k
	// req/s, varying by ±20% from run to run), which would hide what the
	// agent adds; without it p99 is ~250µs and repeats within a few
	// percent. GOMEMLIMIT still bounds the unpaced run's heap.
	gogc := "GOGC=off"
	if v := os.Getenv("VIGIL_BENCH_LOAD_GOGC"); v != "" {
		gogc = "GOGC=" + v
	}
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_HELPER=load", "HELPER_RATE="+strconv.Itoa(rate),
		"HELPER_SECONDS="+strconv.FormatFloat(secs, 'f', -1, 64), "OTEL_SERVICE_NAME=bench-load",
		gogc, "GOMEMLIMIT=4GiB")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("load helper: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 6 && f[0] == "result" {
			var r loadResult
			r.requests, _ = strconv.Atoi(f[1])
			r.p50us, _ = strconv.ParseFloat(f[2], 64)
			r.p99us, _ = strconv.ParseFloat(f[3], 64)
			cpu, _ := strconv.ParseInt(f[4], 10, 64)
			el, _ := strconv.ParseInt(f[5], 10, 64)
			r.cpu, r.elapsed = time.Duration(cpu)*time.Microsecond, time.Duration(el)*time.Microsecond
			return r
		}
	}
	b.Fatalf("load helper printed no result: %s", out)
	return loadResult{}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return cpuTime(ru)
}

func selfRSSBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

func gatherValue(g prometheus.Gatherer, name string, labels map[string]string) float64 {
	mfs, _ := g.Gather()
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				total += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				total += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				total += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

// BenchmarkAgentOverhead runs the same paced HTTP load (a Go server and 8
// keep-alive clients in a child process) without and then with the agent,
// at each rate, and reports what the agent adds: its own CPU (this
// process, net of the harness's CPU in the run without agent), the CPU its
// kernel programs add to the traced application (the child's own CPU with
// minus without; BPF run time is reported next to it), and p99 latency.
// A final unpaced run reports the event rate the agent sustains and its
// drops.
//
//	sudo go test -run '^$' -bench AgentOverhead ./pkg/agent/
//
// Knobs: VIGIL_BENCH_RATES (default "1000,5000" req/s), VIGIL_BENCH_HANDLER_WAIT
// (a Go duration each request waits in the handler; default none), VIGIL_BENCH_SECONDS
// (5 per phase), VIGIL_BENCH_ROUNDS (2 pairs of without/with, in ABBA order;
// figures are medians over the pairs), VIGIL_BENCH_LOAD_GOGC (the load
// child's GOGC, default off), VIGIL_BENCH_EXPORT (0: the agent exports
// nothing; by default it sends metrics and spans to a sink, as users run
// it); the agent's GC settings are vigil-agent's (-runtime.gc-percent,
// GOGC wins), VIGIL_BENCH_CPUPROFILE (file prefix: CPU profile of this process
// during the paced runs with the agent).
func BenchmarkAgentOverhead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the agent benchmark needs root")
	}
	// The agent runs with vigil-agent's runtime settings, for the whole
	// benchmark so that the phases without agent share them.
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	ApplyRuntimeSettings(exportingConfig(b, false, false))
	defer func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) }()
	rates := []int{1000, 5000}
	if v := os.Getenv("VIGIL_BENCH_RATES"); v != "" {
		rates = rates[:0]
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				b.Fatalf("VIGIL_BENCH_RATES: bad rate %q", f)
			}
			rates = append(rates, r)
		}
	}
	secs := 5.0
	if v, err := strconv.ParseFloat(os.Getenv("VIGIL_BENCH_SECONDS"), 64); err == nil {
		secs = v
	}
	rounds := 2
	if v, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	for _, rate := range rates {
		b.Run("rate="+strconv.Itoa(rate), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchPaced(b, rate, secs, rounds)
			}
		})
	}
	b.Run("unpaced", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			benchUnpaced(b, secs)
		}
	})
}

// phaseTotals sums the runs of one side (without or with agent) and keeps
// each round's figures.
type phaseTotals struct {
	requests   int
	elapsed    time.Duration
	appCPU     time.Duration // the load child's own CPU
	parentCPU  time.Duration // this process: harness, plus the agent when loaded
	bpfRunTime time.Duration
	bpfRuns    uint64
	p99us      []float64
	p50us      []float64
	// Per round, in % of a core per 1k req/s.
	appPerK, parentPerK []float64
}

func (p *phaseTotals) add(r loadResult, parentCPU time.Duration) {
	p.requests += r.requests
	p.elapsed += r.elapsed
	p.appCPU += r.cpu
	p.parentCPU += parentCPU
	p.p99us = append(p.p99us, r.p99us)
	p.p50us = append(p.p50us, r.p50us)
	p.appPerK = append(p.appPerK, perK(r.cpu, r.requests))
	p.parentPerK = append(p.parentPerK, perK(parentCPU, r.requests))
}

// perK converts CPU spent over n requests into percent of one core at
// 1000 req/s.
func perK(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * cpu.Seconds() / float64(n) * 1000
}

// medianRatio is the median over rounds of with/without, each round's pair
// run back to back: robust to a round disturbed by other load.
func medianRatio(with, without []float64) float64 {
	r := make([]float64, 0, len(with))
	for i := range with {
		if without[i] > 0 {
			r = append(r, with[i]/without[i])
		}
	}
	return median(r)
}

// medianDiff is the median over rounds of with − without.
func medianDiff(with, without []float64) float64 {
	d := make([]float64, len(with))
	for i := range with {
		d[i] = with[i] - without[i]
	}
	return median(d)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func benchPaced(b *testing.B, rate int, secs float64, rounds int) {
	var without, with phaseTotals
	var observed, rss float64
	for r := 0; r < rounds; r++ {
		// Alternate the order within a round (ABBA) so that a drift of the
		// machine's speed does not favour one side.
		if r%2 == 0 {
			benchWithout(b, &without, rate, secs)
		}
		served, requests := benchWith(b, &with, rate, secs, r, nil)
		if r%2 == 1 {
			benchWithout(b, &without, rate, secs)
		}
		observed += served / float64(requests) / float64(rounds)
		rss = max(rss, selfRSSBytes())
	}
	// BPF run-time accounting costs two clock reads per program run, a
	// noticeable share of the programs' own cost on a VM: it is only on in
	// this extra run, which the CPU and latency figures leave out.
	var stats phaseTotals
	benchWith(b, &stats, rate, secs, rounds, &stats)

	b.ReportMetric(float64(with.requests)/with.elapsed.Seconds(), "req/s")
	b.ReportMetric(mean(without.p99us), "p99-us-without")
	b.ReportMetric(mean(with.p99us), "p99-us-with")
	b.ReportMetric(100*(medianRatio(with.p99us, without.p99us)-1), "p99-overhead-%")
	b.ReportMetric(100*(medianRatio(with.p50us, without.p50us)-1), "p50-overhead-%")
	for r := range with.p99us {
		b.Logf("round %d: p50 %.0f -> %.0f µs, p99 %.0f -> %.0f µs, app CPU %.2f -> %.2f, agent process %.2f -> %.2f %%core/1k req/s (without -> with agent)",
			r, without.p50us[r], with.p50us[r], without.p99us[r], with.p99us[r],
			without.appPerK[r], with.appPerK[r], without.parentPerK[r], with.parentPerK[r])
	}
	// Medians over rounds of each round's back-to-back pair: the load
	// child's CPU per request swings by more than the agent adds when
	// another process disturbs one phase.
	// The agent process, net of what the harness costs without it.
	agent := medianDiff(with.parentPerK, without.parentPerK)
	// The application's CPU grows by the BPF programs run in its syscalls
	// and by the slower syscall path that syscall tracepoints impose.
	app := medianDiff(with.appPerK, without.appPerK)
	b.ReportMetric(agent, "agent-cpu-%core-per-1k-rps")
	b.ReportMetric(app, "app-cpu-added-%core-per-1k-rps")
	b.ReportMetric(agent+app, "total-added-%core-per-1k-rps")
	b.ReportMetric(perK(stats.bpfRunTime, stats.requests), "bpf-runtime-%core-per-1k-rps")
	b.ReportMetric(float64(stats.bpfRuns)/float64(stats.requests), "bpf-runs/req")
	b.ReportMetric(100*(with.appCPU.Seconds()/float64(with.requests)/(without.appCPU.Seconds()/float64(without.requests))-1), "app-cpu-overhead-%")
	b.ReportMetric(rss/(1<<20), "agent-peak-rss-MB")
	b.ReportMetric(observed, "observed-fraction")
}

func benchWithout(b *testing.B, p *phaseTotals, rate int, secs float64) {
	c0 := selfCPU()
	res := runLoad(b, rate, secs)
	p.add(res, selfCPU()-c0)
}

// benchWith runs the load with an agent started for it and returns how many
// server-side requests the agent counted. With bpfStats, the programs' run
// time is accounted (kernel.bpf_stats_enabled) and added to it.
func benchWith(b *testing.B, p *phaseTotals, rate int, secs float64, round int, bpfStats *phaseTotals) (served float64, requests int) {
	a := startBenchAgent(b)
	defer a.Stop()
	var rt0 time.Duration
	var runs0 uint64
	if bpfStats != nil {
		stats, err := ebpf.EnableRunTimeStats()
		if err != nil {
			b.Fatal(err)
		}
		defer stats.Close()
		if rt0, runs0, err = a.Tracer().RunTime(); err != nil {
			b.Fatal(err)
		}
	}
	stopProfile := startProfile(b, rate, round)
	ex0 := counterValue(a.exchanges.WithLabelValues("http"))
	c1 := selfCPU()
	res := runLoad(b, rate, secs)
	// The last events may still wait for the reader's batch (<= 250ms);
	// their processing belongs to this run. The wait polls one counter:
	// gathering the registry here would bill the harness to the agent.
	for dl := time.Now().Add(3 * time.Second); time.Now().Before(dl); time.Sleep(5 * time.Millisecond) {
		// Client and server side of each request.
		if counterValue(a.exchanges.WithLabelValues("http"))-ex0 >= float64(2*res.requests) {
			break
		}
	}
	p.add(res, selfCPU()-c1)
	for dl := time.Now().Add(3 * time.Second); time.Now().Before(dl); time.Sleep(10 * time.Millisecond) {
		if served = gatherValue(a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "bench-load"}); served >= float64(res.requests) {
			break
		}
	}
	stopProfile()
	if round == 0 {
		b.Logf("exported during the first run with the agent: %.0f spans for %d requests (%.0f dropped)", gatherValue(a.Self(), "vigil_agent_spans_sent_total", nil),
			res.requests, gatherValue(a.Self(), "vigil_agent_spans_dropped_total", nil))
	}
	if bpfStats != nil {
		rt1, runs1, err := a.Tracer().RunTime()
		if err != nil {
			b.Fatal(err)
		}
		bpfStats.bpfRunTime += rt1 - rt0
		bpfStats.bpfRuns += runs1 - runs0
	}
	return served, res.requests
}

// startProfile writes a CPU profile of this process (the agent) when
// VIGIL_BENCH_CPUPROFILE is set.
func startProfile(b *testing.B, rate, round int) func() {
	prefix := os.Getenv("VIGIL_BENCH_CPUPROFILE")
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.rate%d.round%d", prefix, rate, round))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// startBenchAgent starts an agent that exports as a user runs it (see
// exportingConfig); VIGIL_BENCH_EXPORT=0 starts it without exporters.
func startBenchAgent(b *testing.B) *Agent {
	cfg := exportingConfig(b, os.Getenv("VIGIL_BENCH_EXPORT") != "0", true)
	a, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	return a
}

// exportingConfig is the agent's default configuration, with one span per
// request sent by OTLP when spans is set, and metrics by remote write when
// metrics is also set, to a sink that reads and discards the requests. The
// sink is a child process, as Vigil would be another one (on another node):
// its CPU is not the agent's.
func exportingConfig(b *testing.B, spans, metrics bool) Config {
	var cfg Config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	args := []string{"-http.listen-address="}
	if spans {
		url := startSink(b)
		args = append(args, "-otlp.endpoint="+url+"/otlp")
		if metrics {
			args = append(args, "-remote-write.url="+url+"/api/v1/push")
		}
	}
	if err := fs.Parse(args); err != nil {
		b.Fatal(err)
	}
	return cfg
}

// sinkHelper serves HTTP on loopback, reading and discarding every request,
// until its stdin is closed; it prints "sink <url>" first.
func sinkHelper() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	fmt.Printf("sink http://%s\n", l.Addr())
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

func startSink(b *testing.B) string {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_HELPER=sink", "OTEL_SERVICE_NAME=bench-sink")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting sink: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "sink ")
	if err != nil || !ok {
		b.Fatalf("sink said %q: %v", line, err)
	}
	return url
}

func benchUnpaced(b *testing.B, secs float64) {
	a := startBenchAgent(b)
	defer a.Stop()
	ev0 := gatherValue(a.Self(), "vigil_agent_events_processed_total", nil)
	t0, c0 := time.Now(), selfCPU()
	res := runLoad(b, 0, secs)
	elapsed := time.Since(t0).Seconds()
	cpu := selfCPU() - c0
	events := gatherValue(a.Self(), "vigil_agent_events_processed_total", nil) - ev0
	drops := gatherValue(a.Self(), "vigil_agent_kernel_events_dropped_total", nil)
	l7drops := gatherValue(a.Self(), "vigil_agent_kernel_events_dropped_total", map[string]string{"reason": "l7_ringbuf_full"})
	b.ReportMetric(float64(res.requests)/res.elapsed.Seconds(), "req/s")
	// At high rates the agent's fixed costs fade and this is its marginal
	// cost per request.
	b.ReportMetric(perK(cpu, res.requests), "agent-cpu-%core-per-1k-rps")
	b.ReportMetric(events/elapsed, "events/s")
	b.ReportMetric(drops, "kernel-drops")
	b.ReportMetric(l7drops, "l7-ringbuf-drops")
}

// BenchmarkHandleL7 is the user-space cost of one HTTP exchange seen from
// both sides (4 events: server read/write, client write/read), without the
// kernel: parsing, pairing, naming and metric updates; with spans, also
// building and queueing the two spans and sending them (to a sink in this
// process) every 1000 exchanges.
func BenchmarkHandleL7(b *testing.B) {
	b.Run("metrics", func(b *testing.B) { benchHandleL7(b, Config{}) })
	b.Run("metrics+spans", func(b *testing.B) { benchHandleL7(b, exportingConfig(b, true, false)) })
}

func benchHandleL7(b *testing.B, cfg Config) {
	a, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	pid := uint32(os.Getpid())
	srv := netip.MustParseAddrPort("127.0.0.1:8080")
	cli := netip.MustParseAddrPort("127.0.0.1:50000")
	req := []byte("GET /users/123 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Go-http-client/1.1\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\nuser")
	ev := func(fd uint32, ts uint64, dir ebpf.Direction, local, remote netip.AddrPort, data []byte) *ebpf.L7Event {
		return &ebpf.L7Event{Timestamp: ts, PID: pid, FD: fd, Dir: dir, SockType: ebpf.SockStream, Size: int64(len(data)),
			Local: local, Remote: remote, Comm: "bench", Data: data}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ts := uint64(i+1) * 1000
		a.HandleL7(ev(5, ts, ebpf.Egress, cli, srv, req))
		a.HandleL7(ev(6, ts+1, ebpf.Ingress, srv, cli, req))
		a.HandleL7(ev(6, ts+2, ebpf.Egress, srv, cli, resp))
		a.HandleL7(ev(5, ts+3, ebpf.Ingress, cli, srv, resp))
		if a.spans != nil && i%1000 == 999 {
			a.spans.Flush(b.Context())
		}
	}
	b.StopTimer()
	if got := gatherValue(a.Exported(), "http_server_request_duration_seconds", nil); got != float64(b.N) {
		b.Fatalf("server exchanges = %v, want %d", got, b.N)
	}
}
