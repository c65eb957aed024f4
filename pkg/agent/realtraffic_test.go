package agent

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// servers (redis-server, postgres) that cannot be told to pick port 0.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start listening: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		// make test installs these (mk/ebpf.mk ebpf-deps); missing means a
		// broken environment, not a reason to skip.
		t.Fatalf("%s not found (run `make ebpf-deps`): %v", name, err)
	}
	return p
}

func TestPythonHTTPServerRecvfromSendto(t *testing.T) {
	forEachIOHookMode(t, testPythonHTTPServerRecvfromSendto)
}

func testPythonHTTPServerRecvfromSendto(t *testing.T, cfg Config) {
	a := startAgent(t, cfg)
	py := requireBinary(t, "python3")
	dir := t.TempDir()
	cmd := exec.Command(py, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OTEL_SERVICE_NAME=demo-py")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	portRe := regexp.MustCompile(`port (\d+)`)
	sc := bufio.NewScanner(stdout)
	var port string
	for sc.Scan() {
		if m := portRe.FindStringSubmatch(sc.Text()); m != nil {
			port = m[1]
			break
		}
	}
	if port == "" {
		t.Fatal("python http.server did not report its port")
	}
	go io.Copy(io.Discard, stdout)
	const n = 12
	startHelper(t, "http-client", "HELPER_N="+strconv.Itoa(n), "HELPER_URL=http://127.0.0.1:"+port, "OTEL_SERVICE_NAME=demo-pyclient")
	waitCount(t, a.Exported(), "http_server_request_duration_seconds", map[string]string{lService: "demo-py",
		"http_request_method": "GET", "http_response_status_code": "404", "http_route": "/items/{id}", "server_port": port}, n)
	waitCount(t, a.Exported(), "http_client_request_duration_seconds", map[string]string{lService: "demo-pyclient",
		"http_request_method": "GET", "http_response_status_code": "404", "http_route": "/items/{id}", "server_port": port}, n)
	// HTTP/1.0: one connection per request.
	waitCount(t, a.Exported(), "tcp_connections_total", map[string]string{lService: "demo-py", "direction": "inbound", "result": "ok"}, n)
}

func TestRedisClientOperations(t *testing.T) { forEachIOHookMode(t, testRedisClientOperations) }

func testRedisClientOperations(t *testing.T, cfg Config) {
	requireRoot(t)
	server := requireBinary(t, "redis-server")
	cli := requireBinary(t, "redis-cli")
	a := startAgent(t, cfg)
	port := strconv.Itoa(freePort(t))
	srv := exec.Command(server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	waitTCP(t, "127.0.0.1:"+port)
	// One long-lived redis-cli reading commands from stdin: the agent names
	// a process from /proc while it runs, and a CLI that exits within
	// milliseconds of its only command could be gone by then.
	rc := startClient(t, exec.Command(cli, "-h", "127.0.0.1", "-p", port), "OTEL_SERVICE_NAME=demo-redis-cli")
	rc.send("SET k v\nGET k\nINCR k\n")
	base := map[string]string{lService: "demo-redis-cli", "db_system": "redis", lPeer: "127.0.0.1:" + port}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "SET", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "GET", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "INCR", "error_type", "ERR"), 1)
	if out := rc.close(); !strings.Contains(out, "ERR") {
		t.Fatalf("INCR on a string did not fail: %s", out)
	}
	// The service map: the client's peer is the redis-server process, known
	// from the connection it accepted (a TCP event, read on its own ring:
	// it may be handled after the client's L7 events).
	waitPeerService(t, a, "127.0.0.1:"+port, "redis-server")
}

func TestPostgresClientOperations(t *testing.T) { forEachIOHookMode(t, testPostgresClientOperations) }

func testPostgresClientOperations(t *testing.T, cfg Config) {
	requireRoot(t)
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL server not installed (run `make ebpf-deps`)")
	}
	binDir := filepath.Dir(bins[len(bins)-1])
	psql := requireBinary(t, "psql")
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("postgres system user: %v", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	a := startAgent(t, cfg)

	// PostgreSQL refuses to run as root: the data directory belongs to the
	// postgres user, outside t.TempDir (whose parents are private to root).
	dir, err := os.MkdirTemp("", "vigil-agent-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	asPostgres := func(c *exec.Cmd) *exec.Cmd {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		c.Dir = dir
		c.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=" + dir}
		return c
	}
	if out, err := asPostgres(exec.Command(filepath.Join(binDir, "initdb"),
		"-D", data, "--auth=trust", "-U", "postgres", "--no-sync")).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	port := strconv.Itoa(freePort(t))
	var logs strings.Builder
	srv := asPostgres(exec.Command(filepath.Join(binDir, "postgres"), "-D", data, "-p", port,
		"-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"))
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGQUIT) // immediate shutdown
		<-exited
	})
	for dl := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("postgres exited: %s", logs.String())
		default:
		}
		if time.Now().After(dl) {
			t.Fatalf("postgres did not listen: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The server may accept TCP before it accepts logins.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := exec.Command(psql, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-X", "-l")
		c.Env = append(os.Environ(), "PGSSLMODE=disable")
		if err := c.Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("postgres did not accept logins")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A long-lived psql reading statements from stdin (see the Redis test).
	client := startClient(t, exec.Command(psql, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres", "-X"),
		"OTEL_SERVICE_NAME=demo-psql", "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	client.send("SELECT 1;\nCREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nSELECT * FROM missing_table;\n")
	base := map[string]string{lService: "demo-psql", "db_system": "postgresql", lPeer: "127.0.0.1:" + port}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "SELECT", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "CREATE", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "INSERT", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "SELECT", "error_type", "42P01"), 1)
	if out := client.close(); !strings.Contains(out, "missing_table") {
		t.Fatalf("psql output lacks the expected error: %s", out)
	}

	// Extended query protocol from a driver-like client.
	startHelper(t, "pgext", "HELPER_PG=127.0.0.1:"+port, "OTEL_SERVICE_NAME=demo-pgext")
	ext := func(kv ...string) map[string]string {
		m := with(kv...)
		m[lService] = "demo-pgext"
		return m
	}
	// Prepared-and-executed, then executed again by name (operation
	// remembered from the Parse), then a failing unnamed statement.
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", ext("db_operation_name", "SELECT", "error_type", ""), 2)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", ext("db_operation_name", "SELECT", "error_type", "42P01"), 1)
	if got := sampleCount(t, a.Exported(), "db_client_operation_duration_seconds", map[string]string{lService: "demo-pgext"}); got != 3 {
		t.Fatalf("extended-protocol operations = %v, want 3\n%s", got, dump(t, a.Exported(), "db_client_operation_duration_seconds"))
	}
}

// client is a CLI kept running with its stdin as a pipe.
type client struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *strings.Builder
	done  chan struct{}
}

func startClient(t *testing.T, cmd *exec.Cmd, env ...string) *client {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, cmd: cmd, stdin: stdin, out: &out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, s); err != nil {
		c.t.Fatalf("writing to %s: %v", c.cmd.Path, err)
	}
}

// close ends the input, waits for the client to exit and returns its output.
func (c *client) close() string {
	c.stdin.Close()
	<-c.done
	return c.out.String()
}

// dnsServer answers A queries with 127.0.0.1, AAAA with no data, and names
// starting with "missing" with NXDOMAIN.
func dnsServer(t *testing.T) string {
	t.Helper()
	// The kernel side only follows UDP sockets talking to port 53; a random
	// 127/8 address keeps concurrent test runs apart.
	var pc net.PacketConn
	var err error
	for i := 0; i < 20; i++ {
		addr := fmt.Sprintf("127.%d.%d.53:53", 100+rand.IntN(100), rand.IntN(250)+1)
		if pc, err = net.ListenPacket("udp", addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("listening on a loopback port 53: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if n < 12 {
				continue
			}
			// Question ends after the name's zero label and type/class.
			off := 12
			for off < n && q[off] != 0 {
				off += int(q[off]) + 1
			}
			off += 5
			if off > n {
				continue
			}
			name := string(q[13:min(20, n)])
			qtype := binary.BigEndian.Uint16(q[off-4:])
			resp := append([]byte(nil), q[:off]...)
			binary.BigEndian.PutUint16(resp[2:], 0x8180) // QR, RD, RA, NoError
			binary.BigEndian.PutUint16(resp[6:], 0)      // ancount
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			switch {
			case strings.HasPrefix(name, "missing"):
				binary.BigEndian.PutUint16(resp[2:], 0x8183) // NXDOMAIN
			case qtype == 1:
				binary.BigEndian.PutUint16(resp[6:], 1)
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			}
			pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// waitDNSLookups waits for the lookups of the DNS tests: n names answered
// (A with an address, AAAA with none) and one NXDOMAIN name, each looked up
// as A and AAAA.
func waitDNSLookups(t *testing.T, a *Agent, service string, n int) {
	t.Helper()
	for _, qt := range []string{"A", "AAAA"} {
		waitCount(t, a.Exported(), "dns_lookup_duration_seconds", map[string]string{lService: service, "dns_question_type": qt, "rcode": "NoError"}, float64(n))
		waitCount(t, a.Exported(), "dns_lookup_duration_seconds", map[string]string{lService: service, "dns_question_type": qt, "rcode": "NXDomain"}, 1)
	}
}

// TestDNSLookups: Go's resolver, on a connected UDP socket.
func TestDNSLookups(t *testing.T) { forEachIOHookMode(t, dnsHelperTest("dns", "demo-dns", 4)) }

// TestUnconnectedDNSLookups: musl's resolver, which sends each query with
// sendto naming the server.
func TestUnconnectedDNSLookups(t *testing.T) {
	forEachIOHookMode(t, dnsHelperTest("dns-unconnected", "demo-musl-dns", 3))
}

// dnsHelperTest runs helper mode against a local DNS server, as service,
// making n lookups, and waits for the agent to count them.
func dnsHelperTest(mode, service string, n int) func(*testing.T, Config) {
	return func(t *testing.T, cfg Config) {
		a := startAgent(t, cfg)
		server := dnsServer(t)
		startHelper(t, mode, "HELPER_N="+strconv.Itoa(n), "HELPER_DNS="+server, "OTEL_SERVICE_NAME="+service)
		waitDNSLookups(t, a, service, n)
	}
}

// glibc's resolver (getaddrinfo, used by C, Python, Ruby, Node and the JVM)
// sends the A and AAAA queries of a lookup together in one sendmmsg and
// reads the answers with recvfrom.
func TestGlibcDNSLookups(t *testing.T) { forEachIOHookMode(t, testGlibcDNSLookups) }

func testGlibcDNSLookups(t *testing.T, cfg Config) {
	a := startAgent(t, cfg)
	py := requireBinary(t, "python3")
	unshare := requireBinary(t, "unshare")
	server := dnsServer(t)
	host, _, _ := net.SplitHostPort(server)
	// The resolver reads its server from /etc/resolv.conf: the client gets
	// its own in a private mount namespace.
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver "+host+"\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `import socket, sys
for line in sys.stdin:
    try:
        socket.getaddrinfo(line.strip(), 80, proto=socket.IPPROTO_TCP)
        print("ok", flush=True)
    except socket.gaierror as e:
        print("failed", e, flush=True)
`
	cmd := exec.Command(unshare, "-m", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$1" -u -c "$2"`, conf, py, script)
	c := startClient(t, cmd, "OTEL_SERVICE_NAME=demo-glibc-dns")
	const n = 3
	for i := 0; i < n; i++ {
		c.send(fmt.Sprintf("host%d.vigil.test.\n", i))
	}
	c.send("missing.vigil.test.\n")
	waitDNSLookups(t, a, "demo-glibc-dns", n)
	if out := c.close(); strings.Count(out, "ok") != n || !strings.Contains(out, "failed") {
		t.Fatalf("lookups did not go as planned:\n%s", out)
	}
}

// TestRemoteWriteAndOTLPExport checks what leaves the agent: remote-write
// requests decoded as prompb and OTLP spans, both with the identity labels.
func TestRemoteWriteAndOTLPExport(t *testing.T) {
	var mu sync.Mutex
	latest := map[string]float64{} // series key -> value of the latest request
	var spans []ptrace.Span
	var spanServices []string
	rw := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req prompb.WriteRequest
		if err := req.Unmarshal(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, ts := range req.Timeseries {
			latest[seriesKey(ts.Labels)] = ts.Samples[len(ts.Samples)-1].Value
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	otlp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := ptraceotlp.NewExportRequest()
		if err := req.UnmarshalProto(body); err != nil || r.URL.Path != "/otlp/v1/traces" {
			http.Error(w, fmt.Sprint("bad request ", r.URL.Path, err), http.StatusBadRequest)
			return
		}
		mu.Lock()
		rss := req.Traces().ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			svc, _ := rss.At(i).Resource().Attributes().Get("service.name")
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				for k := 0; k < sss.At(j).Spans().Len(); k++ {
					spans = append(spans, sss.At(j).Spans().At(k))
					spanServices = append(spanServices, svc.Str())
				}
			}
		}
		mu.Unlock()
	}))
	for _, s := range []*httptest.Server{rw, otlp} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.Listener.Close()
		s.Listener = l
		s.Start()
		defer s.Close()
	}
	cfg := Config{HostName: "node-1"}
	cfg.RemoteWrite.URL = rw.URL + "/api/v1/push"
	cfg.RemoteWrite.Interval = 200 * time.Millisecond
	cfg.OTLP.Endpoint = otlp.URL + "/otlp"
	cfg.OTLP.Interval = 200 * time.Millisecond
	startAgent(t, cfg)
	const n = 7
	h := startHelper(t, "http", "HELPER_N="+strconv.Itoa(n), "OTEL_SERVICE_NAME=demo-export")
	_, port, _ := net.SplitHostPort(h.value("addr"))
	key := seriesKey([]prompb.Label{
		{Name: "__name__", Value: "http_server_request_duration_seconds_count"},
		{Name: "host_name", Value: "node-1"},
		{Name: "http_request_method", Value: "GET"},
		{Name: "http_response_status_code", Value: "200"},
		{Name: "http_route", Value: "/users/{id}"},
		{Name: "server_address", Value: "127.0.0.1"},
		{Name: "server_port", Value: port},
		{Name: "service_instance_id", Value: "node-1:" + strconv.Itoa(h.cmd.Process.Pid)},
		{Name: "service_name", Value: "demo-export"},
	})
	clientSpans := func() int {
		c := 0
		for i, sp := range spans {
			if spanServices[i] == "demo-export" && sp.Kind() == ptrace.SpanKindClient && sp.Name() == "GET" {
				if p, _ := sp.Attributes().Get("url.path"); strings.HasPrefix(p.Str(), "/users/") {
					c++
				}
			}
		}
		return c
	}
	serverSpans := func() int {
		c := 0
		for i, sp := range spans {
			if spanServices[i] == "demo-export" && sp.Kind() == ptrace.SpanKindServer && sp.Name() == "GET /users/{id}" {
				route, _ := sp.Attributes().Get("http.route")
				code, _ := sp.Attributes().Get("http.response.status_code")
				if route.Str() == "/users/{id}" && code.Int() == 200 && sp.EndTimestamp() > sp.StartTimestamp() {
					c++
				}
			}
		}
		return c
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		v, nspans, ncli := latest[key], serverSpans(), clientSpans()
		mu.Unlock()
		if v == n && nspans == n && ncli == n {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			var keys []string
			for k := range latest {
				if strings.Contains(k, "demo-export") && strings.Contains(k, "_count") {
					keys = append(keys, k)
				}
			}
			mu.Unlock()
			t.Fatalf("remote write value %v (want %d), server spans %d, client spans %d (want %d); series seen: %v", v, n, nspans, ncli, n, keys)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The client side names its peer: the server's service, learned from
	// its accepted connections.
	mu.Lock()
	defer mu.Unlock()
	found := false
	for k := range latest {
		if strings.Contains(k, "__name__=http_client_request_duration_seconds_count,") && strings.Contains(k, "service_name=demo-export") &&
			strings.Contains(k, "peer_service=demo-export") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no client series with peer_service=demo-export")
	}
}

func seriesKey(lbls []prompb.Label) string {
	var b strings.Builder
	for _, l := range lbls {
		b.WriteString(l.Name + "=" + l.Value + ",")
	}
	return b.String()
}

// TestRetransmitsAndBytes holds loopback down in a private network namespace
// while a client sends, so the kernel must retransmit; then it checks the
// retransmits and the exact byte counts of the connection.
// Inbound connections the listener drops (accept queue full) are failed
// inbound connections of the only service listening in that network
// namespace.
func TestInboundFailedFromListenDrops(t *testing.T) {
	requireRoot(t)
	ipBin := requireBinary(t, "ip")
	a := startAgent(t, Config{ListenDropsInterval: 100 * time.Millisecond})
	ns := fmt.Sprintf("vigil-agent-backlog-%d", rand.IntN(1_000_000))
	if out, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(ipBin, "netns", "del", ns).Run() })
	if out, err := exec.Command(ipBin, "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v: %s", err, out)
	}
	cmd := exec.Command(ipBin, "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_HELPER=backlog", "HELPER_N=6", "OTEL_SERVICE_NAME=demo-backlog")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var addr string
	for addr == "" && sc.Scan() {
		addr, _ = strings.CutPrefix(sc.Text(), "addr ")
	}
	// The agent names the listener from its listen() and takes a baseline
	// of its namespace's drops before any happen.
	waitPeerService(t, a, addr, "demo-backlog")
	deadline := time.Now().Add(10 * time.Second)
	for gatherValue(a.Self(), "vigil_agent_listen_namespaces", nil) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the agent does not watch the listener's network namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	netstat := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/net/netstat"
	drops := func() uint64 {
		b, err := os.ReadFile(netstat)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parseListenDrops(b)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := drops()
	io.WriteString(stdin, "go\n")
	for sc.Scan() && sc.Text() != "done" {
	}
	dropped := drops() - before
	if dropped == 0 {
		t.Fatal("the listener dropped no SYN; the test did not provoke what it checks")
	}
	waitCount(t, a.Exported(), "tcp_connections_total", map[string]string{lService: "demo-backlog", "direction": "inbound", "result": "failed"}, float64(dropped))
}

func TestRetransmitsAndBytes(t *testing.T) { forEachIOHookMode(t, testRetransmitsAndBytes) }

func testRetransmitsAndBytes(t *testing.T, cfg Config) {
	requireRoot(t)
	ipBin := requireBinary(t, "ip")
	a := startAgent(t, cfg)
	ns := fmt.Sprintf("vigil-agent-test-%d", rand.IntN(1_000_000))
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command(ipBin, "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")

	cmd := exec.Command(ipBin, "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VIGIL_AGENT_HELPER=retrans", "OTEL_SERVICE_NAME=demo-retrans")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
	})
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "done" {
		if v, ok := strings.CutPrefix(sc.Text(), "addr "); ok {
			addr = v
		}
	}
	go func() { io.Copy(io.Discard, stdout); exited <- cmd.Wait() }()

	ip("-n", ns, "link", "set", "lo", "down")
	io.WriteString(stdin, "send\n")
	waitAtLeast(t, a, "tcp_retransmits_total", map[string]string{lService: "demo-retrans", lPeer: addr}, 1)
	ip("-n", ns, "link", "set", "lo", "up")
	stdin.Close()
	if err := <-exited; err != nil {
		t.Fatalf("retransmit helper failed: %v", err)
	}
	// bytes_acked also counts the SYN and FIN sequence numbers.
	waitAtLeast(t, a, "tcp_bytes_sent_total", map[string]string{lService: "demo-retrans", lPeer: addr}, retransBytes)
	if got := sampleCount(t, a.Exported(), "tcp_bytes_sent_total", map[string]string{lService: "demo-retrans", lPeer: addr}); got > retransBytes+2 {
		t.Fatalf("bytes sent = %v, want %d (+SYN/FIN)", got, retransBytes)
	}
	waitAtLeast(t, a, "tcp_bytes_received_total", map[string]string{lService: "demo-retrans", lPeer: "127.0.0.1"}, retransBytes)
	// Both ends closed: the gauge goes back to zero (it was 2 while open).
	deadline := time.Now().Add(20 * time.Second)
	for sampleCount(t, a.Exported(), "tcp_active_connections", map[string]string{lService: "demo-retrans"}) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("active connections did not return to 0:\n%s", dump(t, a.Exported(), "tcp_active_connections"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := sampleCount(t, a.Exported(), "tcp_connections_total", map[string]string{lService: "demo-retrans", "result": "ok"}); got != 2 {
		t.Fatalf("connections = %v, want 2 (one outbound, one inbound)", got)
	}
}

func waitAtLeast(t *testing.T, a *Agent, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got := sampleCount(t, a.Exported(), name, labels); got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v did not reach %v\n%s", name, labels, want, dump(t, a.Exported(), name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMySQLClientOperations(t *testing.T) { forEachIOHookMode(t, testMySQLClientOperations) }

func testMySQLClientOperations(t *testing.T, cfg Config) {
	requireRoot(t)
	installDB := requireBinary(t, "mariadb-install-db")
	client := requireBinary(t, "mariadb")
	server := "/usr/sbin/mariadbd"
	if _, err := os.Stat(server); err != nil {
		t.Fatalf("mariadbd not installed (run `make ebpf-deps`): %v", err)
	}
	a := startAgent(t, cfg)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(installDB, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v: %s", err, out)
	}
	port := strconv.Itoa(freePort(t))
	var logs strings.Builder
	srv := exec.Command(server, "--no-defaults", "--datadir="+data, "--user=root", "--port="+port,
		"--bind-address=127.0.0.1", "--socket="+filepath.Join(dir, "sock"), "--skip-log-bin",
		"--innodb-flush-log-at-trx-commit=0")
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		srv.Process.Kill()
		<-exited
	})
	for dl := time.Now().Add(60 * time.Second); ; {
		if exec.Command(client, "--no-defaults", "-h", "127.0.0.1", "-P", port, "-u", "root", "-e", "SELECT 1").Run() == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("mariadbd exited: %s", logs.String())
		default:
		}
		if time.Now().After(dl) {
			t.Fatalf("mariadbd did not accept logins: %s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// One long-lived client (see the Redis test); --force keeps going after
	// the failing statement.
	c := startClient(t, exec.Command(client, "--no-defaults", "--force", "-h", "127.0.0.1", "-P", port, "-u", "root", "-D", "mysql"),
		"OTEL_SERVICE_NAME=demo-mysql")
	c.send("SELECT 1;\nCREATE TABLE vigil_t (a int);\nINSERT INTO vigil_t VALUES (1);\nSELECT * FROM missing_table;\n")
	base := map[string]string{lService: "demo-mysql", "db_system": "mysql", lPeer: "127.0.0.1:" + port}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "SELECT", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "CREATE", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "INSERT", "error_type", ""), 1)
	waitCount(t, a.Exported(), "db_client_operation_duration_seconds", with("db_operation_name", "SELECT", "error_type", "42S02"), 1)
	if out := c.close(); !strings.Contains(out, "42S02") {
		t.Fatalf("mariadb output lacks the expected error: %s", out)
	}
}
