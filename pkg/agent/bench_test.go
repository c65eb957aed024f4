package agent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-obs/vigil/pkg/ebpf"
)

// loadHelper serves HTTP and loads itself at HELPER_RATE requests/s (0 =
// as fast as 8 clients can) for HELPER_SECONDS, then prints
// "result <requests> <p50 µs> <p99 µs> <cpu ms>".
func loadHelper() error {
	rate, _ := strconv.Atoi(os.Getenv("HELPER_RATE"))
	secs, _ := strconv.ParseFloat(os.Getenv("HELPER_SECONDS"), 64)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	const workers = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	url := "http://" + l.Addr().String() + "/items/"
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	stop := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	var firstErr error
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for i := 0; time.Now().Before(stop); i++ {
				if tick != nil {
					<-tick
				}
				start := time.Now()
				resp, err := client.Get(url + strconv.Itoa(i))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
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
	fmt.Printf("result %d %d %d %d\n", len(lat), pct(0.50), pct(0.99), (cpuTime(ru1) - cpuTime(ru0)).Milliseconds())
	return nil
}

func cpuTime(ru syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type loadResult struct {
	requests          int
	p50us, p99us, cpu float64
}

func runLoad(b *testing.B, rate int, secs float64) loadResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_HELPER=load", "HELPER_RATE="+strconv.Itoa(rate),
		"HELPER_SECONDS="+strconv.FormatFloat(secs, 'f', -1, 64), "OTEL_SERVICE_NAME=bench-load")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("load helper: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == "result" {
			var r loadResult
			r.requests, _ = strconv.Atoi(f[1])
			r.p50us, _ = strconv.ParseFloat(f[2], 64)
			r.p99us, _ = strconv.ParseFloat(f[3], 64)
			r.cpu, _ = strconv.ParseFloat(f[4], 64)
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
// and reports the latency overhead and the agent's own cost. A final
// unpaced phase reports the event rate the agent sustains and its drops.
//
//	sudo go test -run '^$' -bench AgentOverhead -benchtime 1x ./pkg/agent/
//
// Knobs: VIGIL_BENCH_RATE (default 2000 req/s), VIGIL_BENCH_SECONDS (5).
func BenchmarkAgentOverhead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the agent benchmark needs root")
	}
	rate := 2000
	if v, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_RATE")); err == nil {
		rate = v
	}
	secs := 5.0
	if v, err := strconv.ParseFloat(os.Getenv("VIGIL_BENCH_SECONDS"), 64); err == nil {
		secs = v
	}
	for i := 0; i < b.N; i++ {
		base := runLoad(b, rate, secs)

		a, err := New(Config{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		cpu0 := selfCPU()
		withAgent := runLoad(b, rate, secs)
		agentCPU := selfCPU() - cpu0
		// Events of the last requests may still wait for the reader's poll.
		var served float64
		for dl := time.Now().Add(2 * time.Second); time.Now().Before(dl); time.Sleep(10 * time.Millisecond) {
			if served = gatherValue(a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "bench-load"}); served >= float64(withAgent.requests) {
				break
			}
		}

		// Unpaced: as fast as the load generator goes.
		ev0 := gatherValue(a.Self(), "vigil_agent_events_processed_total", nil)
		drop0 := gatherValue(a.Self(), "vigil_agent_kernel_events_dropped_total", nil)
		t0, cpu1 := time.Now(), selfCPU()
		flat := runLoad(b, 0, secs)
		elapsed := time.Since(t0).Seconds()
		flatCPU := selfCPU() - cpu1
		events := gatherValue(a.Self(), "vigil_agent_events_processed_total", nil) - ev0
		drops := gatherValue(a.Self(), "vigil_agent_kernel_events_dropped_total", nil) - drop0
		l7drops := gatherValue(a.Self(), "vigil_agent_kernel_events_dropped_total", map[string]string{"reason": "l7_ringbuf_full"})
		rss := selfRSSBytes()
		a.Stop()

		achieved := float64(withAgent.requests) / secs
		b.ReportMetric(achieved, "req/s")
		b.ReportMetric(base.p99us, "p99-us-without")
		b.ReportMetric(withAgent.p99us, "p99-us-with")
		if base.p99us > 0 {
			b.ReportMetric(100*(withAgent.p99us-base.p99us)/base.p99us, "p99-overhead-%")
		}
		b.ReportMetric(100*(withAgent.cpu-base.cpu)/base.cpu, "app-cpu-overhead-%")
		// Share of one core used by the agent, per 1k req/s of load.
		b.ReportMetric(100*agentCPU.Seconds()/secs/(achieved/1000), "agent-cpu-%core-per-1k-rps")
		b.ReportMetric(rss/(1<<20), "agent-peak-rss-MB")
		b.ReportMetric(served/float64(withAgent.requests), "observed-fraction")
		b.ReportMetric(float64(flat.requests)/secs, "unpaced-req/s")
		// At high rates the agent's fixed costs (polling, timers) fade and
		// this is its marginal cost per request.
		b.ReportMetric(100*flatCPU.Seconds()/elapsed/(float64(flat.requests)/secs/1000), "unpaced-agent-cpu-%core-per-1k-rps")
		b.ReportMetric(events/elapsed, "unpaced-events/s")
		b.ReportMetric(drops, "unpaced-kernel-drops")
		b.ReportMetric(l7drops, "l7-ringbuf-drops")
	}
}

// BenchmarkHandleL7 is the user-space cost of one HTTP exchange seen from
// both sides (4 events: server read/write, client write/read), without the
// kernel: parsing, pairing, naming and metric updates.
func BenchmarkHandleL7(b *testing.B) {
	a, err := New(Config{}, nil)
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
	}
	b.StopTimer()
	if got := gatherValue(a.Exported(), "http_server_request_duration_seconds", nil); got != float64(b.N) {
		b.Fatalf("server exchanges = %v, want %d", got, b.N)
	}
}
