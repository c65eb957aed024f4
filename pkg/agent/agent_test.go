package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/vigil-obs/vigil/pkg/ebpf"
)

// The traffic under test runs in child processes (this test binary re-run
// in helper mode, python3, redis-cli, psql): the agent excludes its own
// process, exactly as in production.
func TestMain(m *testing.M) {
	if mode := os.Getenv("VIGIL_AGENT_HELPER"); mode != "" {
		if err := runHelper(mode); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper generates traffic, prints "done", then waits for stdin to close
// so that the test decides when the process exits.
func runHelper(mode string) error {
	n, _ := strconv.Atoi(os.Getenv("HELPER_N"))
	switch mode {
	case "http":
		listen := os.Getenv("HELPER_LISTEN")
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "user") })
		mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusCreated)
		})
		go http.Serve(l, mux)
		client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		base := "http://" + l.Addr().String()
		for i := 0; i < n; i++ {
			resp, err := client.Get(fmt.Sprintf("%s/users/%d", base, 1000+i))
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for i := 0; i < 3; i++ {
			resp, err := client.Post(base+"/orders", "application/json", strings.NewReader(`{"item":1}`))
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		resp, err := client.Get(base + "/missing/x")
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Println("addr", l.Addr().String())
	case "refused":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := l.Addr().String()
		l.Close()
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return fmt.Errorf("dial %s unexpectedly succeeded", addr)
		}
		fmt.Println("addr", addr)
	case "dns-unconnected":
		// Like musl's resolver: an unconnected UDP socket, each query a
		// sendto naming the server, each answer a recvfrom.
		server, err := net.ResolveUDPAddr("udp", os.Getenv("HELPER_DNS"))
		if err != nil {
			return err
		}
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer pc.Close()
		names := []string{"missing.vigil.test."}
		for i := 0; i < n; i++ {
			names = append(names, fmt.Sprintf("host%d.vigil.test.", i))
		}
		buf := make([]byte, 1500)
		id := uint16(0)
		for _, name := range names {
			for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
				id++
				b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
				b.StartQuestions()
				if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: qt, Class: dnsmessage.ClassINET}); err != nil {
					return err
				}
				q, err := b.Finish()
				if err != nil {
					return err
				}
				if _, err := pc.WriteToUDP(q, server); err != nil {
					return err
				}
				pc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := pc.ReadFromUDP(buf); err != nil {
					return fmt.Errorf("answer to %s %v: %w", name, qt, err)
				}
			}
		}
	case "dns":
		server := os.Getenv("HELPER_DNS")
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", server)
		}}
		for i := 0; i < n; i++ {
			// One A (answered) and one AAAA (NXDOMAIN) query each.
			if _, err := r.LookupHost(context.Background(), fmt.Sprintf("host%d.vigil.test.", i)); err != nil {
				return err
			}
		}
		// NXDOMAIN for both A and AAAA; absolute so no search domain is tried.
		if _, err := r.LookupHost(context.Background(), "missing.vigil.test."); err == nil {
			return fmt.Errorf("missing.vigil.test resolved")
		}
	case "http-client":
		url := os.Getenv("HELPER_URL")
		for i := 0; i < n; i++ {
			resp, err := http.Get(fmt.Sprintf("%s/items/%d", url, i))
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	case "retrans":
		return retransHelper()
	case "backlog":
		return backlogHelper()
	case "load":
		return loadHelper()
	case "sink":
		return sinkHelper()
	case "pgext":
		if err := pgExtendedHelper(os.Getenv("HELPER_PG")); err != nil {
			return err
		}
	case "reset":
		// The server aborts the connection (SO_LINGER 0): it sends an RST,
		// the client receives it.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		accepted := make(chan error, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				// Abort only once the client is connected and has written.
				if _, err = c.Read(make([]byte, 1)); err == nil {
					c.(*net.TCPConn).SetLinger(0)
					_, err = c.Write([]byte("hi"))
					c.Close()
				}
			}
			accepted <- err
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return err
		}
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		if err := <-accepted; err != nil {
			return err
		}
		buf := make([]byte, 16)
		for {
			if _, err := c.Read(buf); err != nil {
				if !strings.Contains(err.Error(), "reset") {
					return fmt.Errorf("read after abort: %v, want a reset", err)
				}
				break
			}
		}
		c.Close()
		fmt.Println("addr", l.Addr().String())
	default:
		return fmt.Errorf("unknown helper mode %q", mode)
	}
	fmt.Println("done")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

type helper struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines []string
}

// startHelper runs this binary in helper mode and waits for "done".
func startHelper(t *testing.T, mode string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"VIGIL_AGENT_HELPER=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "done" {
			return h
		}
		h.lines = append(h.lines, line)
	}
	cmd.Wait()
	t.Fatalf("helper %s exited before done: %v", mode, cmd.ProcessState)
	return nil
}

func (h *helper) value(key string) string {
	for _, l := range h.lines {
		if k, v, ok := strings.Cut(l, " "); ok && k == key {
			return v
		}
	}
	return ""
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent's eBPF tests need root; CI runs them as root")
	}
}

// waitPeerService waits until the agent names the local server at peer.
func waitPeerService(t *testing.T, a *Agent, peer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := a.PeerService(peer)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PeerService(%s) = %q, want %q", peer, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forEachIOHookMode runs test once with each way the tracer can see socket
// I/O: the sock_{recv,send}_length tracepoints this kernel has, and the
// read/write syscall tracepoints that kernels before 6.3 use.
func forEachIOHookMode(t *testing.T, test func(*testing.T, Config)) {
	for _, mode := range []string{ebpf.IOHooksAuto, ebpf.IOHooksSyscalls} {
		t.Run("io-hooks="+mode, func(t *testing.T) { test(t, Config{IOHooks: mode}) })
	}
}

func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	requireRoot(t)
	a, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

// sampleCount sums the counter values / histogram sample counts of the
// series of metric name whose labels include want.
func sampleCount(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metrics
				}
			}
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				total += float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_COUNTER:
				total += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

// waitCount polls until the count reaches want (events are asynchronous),
// then requires it to be exactly want.
func waitCount(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got float64
	for {
		got = sampleCount(t, g, name, labels)
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("%s%v = %v, want exactly %v\n%s", name, labels, got, want, dump(t, g, name))
	}
}

func dump(t *testing.T, g prometheus.Gatherer, name string) string {
	mfs, _ := g.Gather()
	var b strings.Builder
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			fmt.Fprintf(&b, "  %v\n", m.GetLabel())
		}
	}
	return b.String()
}

func TestHTTPGoServerAndClientExactCounts(t *testing.T) {
	forEachIOHookMode(t, testHTTPGoServerAndClientExactCounts)
}

func testHTTPGoServerAndClientExactCounts(t *testing.T, cfg Config) {
	a := startAgent(t, cfg)
	const n = 25
	h := startHelper(t, "http", "HELPER_N="+strconv.Itoa(n), "OTEL_SERVICE_NAME=demo-http")
	addr := h.value("addr")
	host, port, _ := net.SplitHostPort(addr)
	server := map[string]string{lService: "demo-http", "http_request_method": "GET", "http_response_status_code": "200",
		"http_route": "/users/{id}", "server_address": host, "server_port": port,
		lInstance: a.host + ":" + strconv.Itoa(h.cmd.Process.Pid)}
	waitCount(t, a.Exported(), "http_server_request_duration_seconds", server, n)
	client := map[string]string{lService: "demo-http", "http_request_method": "GET", "http_response_status_code": "200",
		"http_route": "/users/{id}", "server_address": host, "server_port": port, lPeer: addr}
	waitCount(t, a.Exported(), "http_client_request_duration_seconds", client, n)
	waitCount(t, a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "demo-http",
		"http_request_method": "POST", "http_response_status_code": "201", "http_route": "/orders"}, 3)
	waitCount(t, a.Exported(), "http_client_request_duration_seconds", map[string]string{lService: "demo-http",
		"http_request_method": "GET", "http_response_status_code": "404", "http_route": "/missing/x"}, 1)
	// Every connection the client opened was accepted by the server (the
	// Transport may dial more than one when a request races the return of
	// the idle connection, so the number itself is not fixed).
	out := map[string]string{lService: "demo-http", "direction": "outbound", "result": "ok", lPeer: addr}
	in := map[string]string{lService: "demo-http", "direction": "inbound", "result": "ok", lPeer: "127.0.0.1"}
	deadline := time.Now().Add(15 * time.Second)
	for {
		o, i := sampleCount(t, a.Exported(), "tcp_connections_total", out), sampleCount(t, a.Exported(), "tcp_connections_total", in)
		if o >= 1 && o == i {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbound %v, inbound %v connections\n%s", o, i, dump(t, a.Exported(), "tcp_connections_total"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitPeerService(t, a, addr, "demo-http")
}

func TestRefusedConnectionCountedAsFailed(t *testing.T) {
	a := startAgent(t, Config{})
	h := startHelper(t, "refused", "OTEL_SERVICE_NAME=demo-refused")
	waitCount(t, a.Exported(), "tcp_connections_total", map[string]string{lService: "demo-refused", "direction": "outbound",
		"result": "failed", lPeer: h.value("addr")}, 1)
	if got := sampleCount(t, a.Exported(), "tcp_connections_total", map[string]string{lService: "demo-refused", "result": "ok"}); got != 0 {
		t.Fatalf("ok connections = %v", got)
	}
}

// retransBytes is what the retransmit helper's client sends after the link
// goes down.
const retransBytes = 256 << 10

// retransHelper runs inside a private network namespace: it connects a
// client to a server over loopback, prints "done", and on "send" writes
// retransBytes while the test holds the namespace's lo down (so the kernel
// retransmits). When stdin closes it finishes and checks every byte arrived.
func retransHelper() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	fmt.Println("addr", l.Addr().String())
	fmt.Println("done")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "send" {
		return fmt.Errorf("expected send command")
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, retransBytes))
		wrote <- err
	}()
	for in.Scan() {
	}
	if err := <-wrote; err != nil {
		return err
	}
	c.Close()
	if n := <-got; n != retransBytes {
		return fmt.Errorf("server received %d bytes, want %d", n, retransBytes)
	}
	return nil
}

func TestSelfTelemetryEndpoint(t *testing.T) {
	a := startAgent(t, Config{ListenAddress: "127.0.0.1:0"})
	// Some traffic so that events are processed.
	startHelper(t, "http", "HELPER_N=2", "OTEL_SERVICE_NAME=demo-self")
	waitCount(t, a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "demo-self", "http_route": "/users/{id}"}, 2)
	resp, err := http.Get("http://" + a.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		`vigil_agent_hook_attached{hook="sock/sock_recv_length"} 1`,
		`vigil_agent_hook_attached{hook="syscalls/sys_exit_accept4"} 1`,
		`vigil_agent_hook_attached{hook="sock/inet_sock_set_state"} 1`,
		`vigil_agent_kernel_events_dropped_total{reason="l7_ringbuf_full"}`,
		`vigil_agent_bpf_map_entries{map="known_socks"}`,
		`vigil_agent_events_processed_total{kind="l7"}`,
		`vigil_agent_events_processed_total{kind="tcp"}`,
		`process_cpu_seconds_total`,
		`process_resident_memory_bytes`,
		`vigil_agent_tracked_connections`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestHTTPOverIPv6(t *testing.T) {
	a := startAgent(t, Config{})
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	const n = 5
	h := startHelper(t, "http", "HELPER_N="+strconv.Itoa(n), "HELPER_LISTEN=[::1]:0", "OTEL_SERVICE_NAME=demo-http6")
	addr := h.value("addr")
	_, port, _ := net.SplitHostPort(addr)
	waitCount(t, a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "demo-http6",
		"http_route": "/users/{id}", "server_address": "::1", "server_port": port}, n)
	waitCount(t, a.Exported(), "http_client_request_duration_seconds", map[string]string{lService: "demo-http6",
		"http_route": "/users/{id}", lPeer: addr}, n)
	waitAtLeast(t, a, "tcp_connections_total", map[string]string{lService: "demo-http6", "direction": "inbound", lPeer: "::1"}, 1)
}

func TestResetsAndRTT(t *testing.T) { forEachIOHookMode(t, testResetsAndRTT) }

func testResetsAndRTT(t *testing.T, cfg Config) {
	a := startAgent(t, cfg)
	h := startHelper(t, "reset", "OTEL_SERVICE_NAME=demo-reset")
	addr := h.value("addr")
	waitCount(t, a.Exported(), "tcp_resets_total", map[string]string{lService: "demo-reset", "direction": "sent", lPeer: "127.0.0.1"}, 1)
	waitCount(t, a.Exported(), "tcp_resets_total", map[string]string{lService: "demo-reset", "direction": "received", lPeer: addr}, 1)
	// Both ends moved data ("hi"), so the smoothed RTT of at least one of
	// them was sampled (from its I/O, or by tcp_probe with the syscall
	// hooks).
	waitAtLeast(t, a, "tcp_rtt_seconds", map[string]string{lService: "demo-reset"}, 1)
}

// TestProcessNamedAtExec checks that a process is named as soon as it execs,
// before any network traffic (short-lived clients may exit before their
// first request is processed).
func TestProcessNamedAtExec(t *testing.T) {
	a := startAgent(t, Config{})
	cmd := exec.Command("sleep", "60")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=demo-exec")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := uint32(cmd.Process.Pid)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if name, ok := a.CachedServiceName(pid); ok {
			if name != "demo-exec" {
				t.Fatalf("named %q, want demo-exec", name)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("process not named after exec")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGarbageCollectsExitedProcesses needs no eBPF: it feeds an event for a
// process that has exited and checks its series go away after the grace
// period (zero here).
func TestGarbageCollectsExitedProcesses(t *testing.T) {
	a, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=demo-gc")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	// Named while alive, then it exits. Start returns when exec has begun,
	// possibly before the new image's environment is in place: retry.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if got := a.resolver.Lookup(pid).ServiceName; got == "demo-gc" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("named %q", got)
		}
		a.resolver.Forget(pid)
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	a.HandleTCP(&ebpf.TCPEvent{Type: ebpf.TCPConnectFailed, PID: pid, Remote: netip.MustParseAddrPort("10.0.0.1:80")})
	labels := map[string]string{lService: "demo-gc"}
	if got := sampleCount(t, a.Exported(), "tcp_connections_total", labels); got != 1 {
		t.Fatalf("before GC: %v", got)
	}
	a.collectGarbage() // notices the exit
	if got := sampleCount(t, a.Exported(), "tcp_connections_total", labels); got != 1 {
		t.Fatalf("deleted before the grace period: %v", got)
	}
	a.collectGarbage() // grace (2 x interval = 0) has passed
	if got := sampleCount(t, a.Exported(), "tcp_connections_total", labels); got != 0 {
		t.Fatalf("after GC: %v", got)
	}
	if _, ok := a.CachedServiceName(pid); ok {
		t.Fatal("identity still cached after GC")
	}
}

// pgExtendedHelper speaks the PostgreSQL extended query protocol (what
// drivers such as pgx and JDBC use), which psql cannot: a named statement
// is prepared and executed in one batch, executed again by name, and an
// unnamed statement fails.
func pgExtendedHelper(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	msg := func(typ byte, parts ...[]byte) []byte {
		n := 4
		for _, p := range parts {
			n += len(p)
		}
		out := []byte{typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		if typ == 0 {
			out = out[1:]
		}
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cstr := func(s string) []byte { return append([]byte(s), 0) }
	// readUntilReady returns the SQLSTATE of an ErrorResponse, if any.
	readUntilReady := func() (string, error) {
		state := ""
		for {
			typ, err := r.ReadByte()
			if err != nil {
				return "", err
			}
			var l [4]byte
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return "", err
			}
			body := make([]byte, int(l[0])<<24|int(l[1])<<16|int(l[2])<<8|int(l[3])-4)
			if _, err := io.ReadFull(r, body); err != nil {
				return "", err
			}
			switch typ {
			case 'E':
				for _, f := range strings.Split(string(body), "\x00") {
					if strings.HasPrefix(f, "C") {
						state = f[1:]
					}
				}
			case 'Z':
				return state, nil
			}
		}
	}
	startup := msg(0, []byte{0, 3, 0, 0}, cstr("user"), cstr("postgres"), cstr("database"), cstr("postgres"), []byte{0})
	if _, err := c.Write(startup); err != nil {
		return err
	}
	if _, err := readUntilReady(); err != nil {
		return fmt.Errorf("startup: %w", err)
	}
	noParams := []byte{0, 0, 0, 0, 0, 0}
	batches := [][]byte{
		// Parse s1 + Bind + Describe + Execute + Sync.
		append(append(append(append(msg('P', cstr("s1"), cstr("SELECT 42"), []byte{0, 0}),
			msg('B', cstr(""), cstr("s1"), noParams)...), msg('D', []byte{'P'}, cstr(""))...),
			msg('E', cstr(""), []byte{0, 0, 0, 0})...), msg('S')...),
		// Bind s1 again by name + Execute + Sync.
		append(append(msg('B', cstr(""), cstr("s1"), noParams), msg('E', cstr(""), []byte{0, 0, 0, 0})...), msg('S')...),
		// Unnamed statement that fails.
		append(append(append(msg('P', cstr(""), cstr("SELECT * FROM missing_ext"), []byte{0, 0}),
			msg('B', cstr(""), cstr(""), noParams)...), msg('E', cstr(""), []byte{0, 0, 0, 0})...), msg('S')...),
	}
	want := []string{"", "", "42P01"}
	for i, b := range batches {
		if _, err := c.Write(b); err != nil {
			return err
		}
		state, err := readUntilReady()
		if err != nil {
			return fmt.Errorf("batch %d: %w", i, err)
		}
		if state != want[i] {
			return fmt.Errorf("batch %d: SQLSTATE %q, want %q", i, state, want[i])
		}
	}
	return nil
}

// backlogHelper listens with a backlog of 0 and never accepts, prints its
// address, and on "go" on stdin dials it HELPER_N times with a short timeout:
// the first connection fills the accept queue, the SYNs of the others are
// dropped by the listener. It prints "done" and waits for stdin to close.
func backlogHelper() error {
	n, _ := strconv.Atoi(os.Getenv("HELPER_N"))
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := syscall.Listen(fd, 0); err != nil {
		return err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	fmt.Println("addr", addr)
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "go" {
		return fmt.Errorf("expected go on stdin")
	}
	var conns []net.Conn
	for i := 0; i < n; i++ {
		// Timeouts are expected: the listener drops these SYNs.
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			conns = append(conns, c)
		}
	}
	fmt.Println("done")
	for in.Scan() {
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// TestApplyRuntimeSettings checks that the agent's GC flags take effect and
// that GOGC and GOMEMLIMIT in the environment win over them.
func TestApplyRuntimeSettings(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Setenv(env, "") // restored after the test
		os.Unsetenv(env)
	}
	ApplyRuntimeSettings(Config{GCPercent: 300, MemoryLimitMB: 70})
	if got := debug.SetGCPercent(100); got != 300 {
		t.Fatalf("GC percent %d, want 300", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 70<<20 {
		t.Fatalf("memory limit %d, want %d", got, 70<<20)
	}
	os.Setenv("GOGC", "150")
	ApplyRuntimeSettings(Config{GCPercent: 300})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d after ApplyRuntimeSettings with GOGC set, want it left alone (100)", got)
	}
}
