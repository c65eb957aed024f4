package l7

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestRoute(t *testing.T) {
	cases := map[string]string{
		"":                               "/",
		"/":                              "/",
		"/users/123":                     "/users/{id}",
		"/users/123/orders/9f8e7d6c5b4a": "/users/{id}/orders/{id}",
		"/api/v2/items":                  "/api/v2/items",
		"/oauth2/authorize":              "/oauth2/authorize",
		"/o/3fa85f64-5717-4562-b3fc-2c963f66afa6": "/o/{id}",
		"/blobs/deadbeef01":                       "/blobs/{id}",
		"/files/abcdefab":                         "/files/abcdefab", // all letters: a word, not an ID
		"/t/01HZX3K9Q8WJ5V4M2N7P6R0S1T":           "/t/{id}",
		"/health":                                 "/health",
	}
	for in, want := range cases {
		if got := Route(in); got != want {
			t.Errorf("Route(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHTTP(t *testing.T) {
	req, ok := ParseHTTPRequest([]byte("GET /users/42?x=1 HTTP/1.1\r\nUser-Agent: x\r\nHost: api.local:8080\r\n\r\n"))
	if !ok || req.Method != "GET" || req.Path != "/users/42" || req.Host != "api.local:8080" {
		t.Fatalf("request = %+v %v", req, ok)
	}
	// Truncated capture: a long request line without its version.
	req, ok = ParseHTTPRequest([]byte("POST /upload/aaaaaaaa"))
	if !ok || req.Method != "POST" || req.Host != "" {
		t.Fatalf("truncated request = %+v %v", req, ok)
	}
	for _, bad := range []string{"GET", "GETX / HTTP/1.1\r\n", "get / HTTP/1.1\r\n", "GET / SMTP/1.0\r\n", "GET nopath HTTP/1.1\r\n"} {
		if _, ok := ParseHTTPRequest([]byte(bad)); ok {
			t.Errorf("ParseHTTPRequest(%q) accepted", bad)
		}
	}
	resp, ok := ParseHTTPResponse([]byte("HTTP/1.1 503 Service Unavailable\r\n"))
	if !ok || resp.Status != 503 || resp.ErrorType != "503" {
		t.Fatalf("response = %+v %v", resp, ok)
	}
	resp, ok = ParseHTTPResponse([]byte("HTTP/1.0 200 OK\r\n"))
	if !ok || resp.Status != 200 || resp.ErrorType != "" {
		t.Fatalf("response = %+v %v", resp, ok)
	}
	if _, ok := ParseHTTPResponse([]byte("HTTP/1.1 2000 OK\r\n")); ok {
		t.Fatal("bad status accepted")
	}
}

func pgMsg(typ byte, body ...[]byte) []byte {
	var n int
	for _, b := range body {
		n += len(b)
	}
	out := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(n+4))
	for _, b := range body {
		out = append(out, b...)
	}
	return out
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func TestPostgres(t *testing.T) {
	q := pgMsg('Q', cstr("  /* hi */ select * from users"))
	req, ok := ParsePostgresRequest(q)
	if !ok || req.Operation != "SELECT" || req.Skip {
		t.Fatalf("simple query = %+v %v", req, ok)
	}
	// Extended protocol, unnamed statement: Parse/Bind/Describe/Execute/Sync.
	ext := append(pgMsg('P', cstr(""), cstr("INSERT INTO t VALUES ($1)"), []byte{0, 0}),
		pgMsg('B', cstr(""), cstr(""), []byte{0, 0, 0, 0, 0, 0})...)
	ext = append(ext, pgMsg('D', []byte{'P'}, cstr(""))...)
	ext = append(ext, pgMsg('E', cstr(""), []byte{0, 0, 0, 0})...)
	ext = append(ext, pgMsg('S')...)
	req, ok = ParsePostgresRequest(ext)
	if !ok || req.Operation != "INSERT" || req.Skip {
		t.Fatalf("extended = %+v %v", req, ok)
	}
	// Preparation only.
	prep := append(pgMsg('P', cstr("s1"), cstr("UPDATE t SET a=1"), []byte{0, 0}), pgMsg('S')...)
	req, ok = ParsePostgresRequest(prep)
	if !ok || !req.Skip || req.PGParsed["s1"] != "UPDATE" {
		t.Fatalf("prepare = %+v %v", req, ok)
	}
	// Execution of the named statement later: the tracker resolves it.
	exec := append(pgMsg('B', cstr(""), cstr("s1"), []byte{0, 0, 0, 0, 0, 0}), pgMsg('E', cstr(""), []byte{0, 0, 0, 0})...)
	exec = append(exec, pgMsg('S')...)
	req, ok = ParsePostgresRequest(exec)
	if !ok || req.PGStatement != "s1" || req.Operation != "" || req.Skip {
		t.Fatalf("bind/execute = %+v %v", req, ok)
	}

	errResp := pgMsg('E', []byte("SERROR\x00"), []byte("C42P01\x00"), []byte("Mrelation does not exist\x00\x00"))
	errResp = append(errResp, pgMsg('Z', []byte{'I'})...)
	resp, ok := ParsePostgresResponse(errResp)
	if !ok || resp.ErrorType != "42P01" {
		t.Fatalf("error response = %+v %v", resp, ok)
	}
	okResp := append(pgMsg('C', cstr("SELECT 1")), pgMsg('Z', []byte{'I'})...)
	resp, ok = ParsePostgresResponse(okResp)
	if !ok || resp.ErrorType != "" {
		t.Fatalf("ok response = %+v %v", resp, ok)
	}
	// Startup message (no type byte) is not a request.
	if _, ok := ParsePostgresRequest([]byte{0, 0, 0, 8, 0, 3, 0, 0}); ok {
		t.Fatal("startup accepted as request")
	}
}

func TestPostgresTrackerResolvesNamedStatements(t *testing.T) {
	tr := NewTracker(0)
	remote := netip.MustParseAddrPort("127.0.0.1:5432")
	feed := func(egress bool, ts uint64, b []byte) (Exchange, bool) {
		return tr.Feed(Segment{PID: 1, FD: 3, Timestamp: ts, Egress: egress, Remote: remote, Data: b})
	}
	ready := pgMsg('Z', []byte{'I'})
	prep := append(pgMsg('P', cstr("s1"), cstr("DELETE FROM t"), []byte{0, 0}), pgMsg('S')...)
	if _, ok := feed(true, 1, prep); ok {
		t.Fatal("prepare completed")
	}
	if _, ok := feed(false, 2, append(pgMsg('1'), ready...)); ok {
		t.Fatal("prepare counted as an operation")
	}
	exec := append(pgMsg('B', cstr(""), cstr("s1"), []byte{0, 0, 0, 0, 0, 0}), pgMsg('E', cstr(""), []byte{0, 0, 0, 0})...)
	feed(true, 10, exec)
	ex, ok := feed(false, 25, append(pgMsg('C', cstr("DELETE 3")), ready...))
	if !ok || ex.Request.Operation != "DELETE" || ex.Role != RoleClient || ex.End-ex.Start != 15 {
		t.Fatalf("exchange = %+v %v", ex, ok)
	}
}

func mysqlPkt(seq byte, payload []byte) []byte {
	n := len(payload)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...)
}

func TestMySQL(t *testing.T) {
	req, ok := ParseMySQLRequest(mysqlPkt(0, append([]byte{0x03}, "UPDATE accounts SET x=1"...)))
	if !ok || req.Operation != "UPDATE" {
		t.Fatalf("COM_QUERY = %+v %v", req, ok)
	}
	resp, ok := ParseMySQLResponse(mysqlPkt(1, append([]byte{0xff, 0x7a, 0x04, '#'}, "42S02Table doesn't exist"...)))
	if !ok || resp.ErrorType != "42S02" {
		t.Fatalf("ERR = %+v %v", resp, ok)
	}
	resp, ok = ParseMySQLResponse(mysqlPkt(1, []byte{0x00, 0, 0, 2, 0, 0, 0}))
	if !ok || resp.ErrorType != "" {
		t.Fatalf("OK = %+v %v", resp, ok)
	}
	// Server greeting (protocol 10) is not a request.
	if _, ok := ParseMySQLRequest(mysqlPkt(0, append([]byte{0x0a}, "8.0.36\x00"...))); ok {
		t.Fatal("greeting accepted")
	}
}

func TestRedis(t *testing.T) {
	req, ok := ParseRedisRequest([]byte("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n"))
	if !ok || req.Operation != "SET" {
		t.Fatalf("request = %+v %v", req, ok)
	}
	resp, ok := ParseRedisResponse([]byte("-WRONGTYPE Operation against a key\r\n"))
	if !ok || resp.ErrorType != "WRONGTYPE" {
		t.Fatalf("error = %+v %v", resp, ok)
	}
	resp, ok = ParseRedisResponse([]byte("+OK\r\n"))
	if !ok || resp.ErrorType != "" {
		t.Fatalf("ok = %+v %v", resp, ok)
	}
	for _, bad := range []string{"*x\r\n", "*1\r\n$100\r\nGET\r\n", "PING\r\n"} {
		if _, ok := ParseRedisRequest([]byte(bad)); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func dnsMsg(id uint16, flags uint16, name string, qtype uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b, id)
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, l := range splitDots(name) {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, byte(qtype>>8), byte(qtype), 0, 1)
	return b
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func TestDNSAndTrackerPairsByID(t *testing.T) {
	q1 := dnsMsg(0x1111, 0x0100, "example.com", 1)
	q2 := dnsMsg(0x2222, 0x0100, "example.com", 28)
	req, ok := ParseDNSQuery(q1)
	if !ok || req.QType != "A" || req.QName != "example.com" {
		t.Fatalf("query = %+v %v", req, ok)
	}
	tr := NewTracker(0)
	remote := netip.MustParseAddrPort("127.0.0.1:53")
	seg := func(ts uint64, egress bool, b []byte) Segment {
		return Segment{PID: 7, FD: 9, Timestamp: ts, Egress: egress, Datagram: true, Remote: remote, Data: b}
	}
	tr.Feed(seg(100, true, q1))
	tr.Feed(seg(110, true, q2))
	// AAAA answered first, with NXDOMAIN.
	ex, ok := tr.Feed(seg(150, false, dnsMsg(0x2222, 0x8183, "example.com", 28)))
	if !ok || ex.Request.QType != "AAAA" || ex.Response.RCode != "NXDomain" || ex.End-ex.Start != 40 {
		t.Fatalf("exchange = %+v %v", ex, ok)
	}
	ex, ok = tr.Feed(seg(170, false, dnsMsg(0x1111, 0x8180, "example.com", 1)))
	if !ok || ex.Request.QType != "A" || ex.Response.RCode != "NoError" || ex.End-ex.Start != 70 {
		t.Fatalf("exchange = %+v %v", ex, ok)
	}
}

func TestTrackerHTTPServerAndClient(t *testing.T) {
	tr := NewTracker(0)
	peer := netip.MustParseAddrPort("10.0.0.1:40000")
	seg := func(fd uint32, ts uint64, egress bool, s string) Segment {
		return Segment{PID: 1, FD: fd, Timestamp: ts, Egress: egress, Remote: peer, Data: []byte(s)}
	}
	// Server side: request read, body continuation ignored, response written.
	if _, ok := tr.Feed(seg(4, 1000, false, "POST /users/7 HTTP/1.1\r\nHost: a\r\n\r\n")); ok {
		t.Fatal("completed on request")
	}
	tr.Feed(seg(4, 1100, false, `{"name":"x"}`))
	ex, ok := tr.Feed(seg(4, 1500, true, "HTTP/1.1 201 Created\r\n\r\n"))
	if !ok || ex.Role != RoleServer || ex.Request.Method != "POST" || Route(ex.Request.Path) != "/users/{id}" || ex.Response.Status != 201 || ex.End-ex.Start != 500 {
		t.Fatalf("server exchange = %+v %v", ex, ok)
	}
	// Go's server reads the first byte of the next keep-alive request alone.
	tr.Feed(seg(4, 2000, false, "G"))
	tr.Feed(seg(4, 2100, false, "ET /users/8 HTTP/1.1\r\n\r\n"))
	ex, ok = tr.Feed(seg(4, 2300, true, "HTTP/1.1 200 OK\r\n\r\n"))
	if !ok || ex.Request.Method != "GET" || ex.Request.Path != "/users/8" || ex.End-ex.Start != 300 {
		t.Fatalf("split request = %+v %v", ex, ok)
	}
	// A short body tail followed by the next request: the request still parses.
	tr.Feed(seg(4, 3000, false, "POST /x HTTP/1.1\r\n\r\n"))
	tr.Feed(seg(4, 3001, false, "{}"))
	tr.Feed(seg(4, 3002, true, "HTTP/1.1 200 OK\r\n\r\n"))
	tr.Feed(seg(4, 3003, false, "{}"))
	tr.Feed(seg(4, 3004, false, "GET /y HTTP/1.1\r\n\r\n"))
	ex, ok = tr.Feed(seg(4, 3010, true, "HTTP/1.1 204 No Content\r\n\r\n"))
	if !ok || ex.Request.Path != "/y" || ex.Start != 3004 {
		t.Fatalf("after body tail = %+v %v", ex, ok)
	}
	// Interim 100 Continue does not complete the request.
	tr.Feed(seg(7, 100, true, "PUT /blob/1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"))
	if _, ok := tr.Feed(seg(7, 110, false, "HTTP/1.1 100 Continue\r\n\r\n")); ok {
		t.Fatal("100 Continue completed the exchange")
	}
	ex, ok = tr.Feed(seg(7, 150, false, "HTTP/1.1 204 No Content\r\n\r\n"))
	if !ok || ex.Response.Status != 204 || ex.End-ex.Start != 50 {
		t.Fatalf("after 100 Continue = %+v %v", ex, ok)
	}
	// Client side, pipelined: FIFO pairing.
	tr.Feed(seg(5, 10, true, "GET /a HTTP/1.1\r\n\r\n"))
	tr.Feed(seg(5, 20, true, "GET /b HTTP/1.1\r\n\r\n"))
	ex, ok = tr.Feed(seg(5, 30, false, "HTTP/1.1 200 OK\r\n\r\n"))
	if !ok || ex.Role != RoleClient || ex.Request.Path != "/a" {
		t.Fatalf("first = %+v", ex)
	}
	ex, ok = tr.Feed(seg(5, 40, false, "HTTP/1.1 404 Not Found\r\n\r\n"))
	if !ok || ex.Request.Path != "/b" || ex.Response.Status != 404 {
		t.Fatalf("second = %+v", ex)
	}
	// A response without a request is ignored.
	if _, ok := tr.Feed(seg(5, 50, false, "HTTP/1.1 200 OK\r\n\r\n")); ok {
		t.Fatal("unsolicited response paired")
	}
	// Unknown protocols give up after a few tries.
	for i := 0; i < 20; i++ {
		tr.Feed(seg(6, uint64(i), true, "\x16\x03\x01\x02\x00"))
	}
	if c := tr.conns[connKey{1, 6}]; c.role != RoleUnknown || c.failures != maxDetectTries {
		t.Fatalf("tls conn = %+v", c)
	}
	tr.Sweep(1_000_000)
	if tr.Len() != 0 {
		t.Fatalf("Sweep left %d conns", tr.Len())
	}
}

func TestTrackerBounded(t *testing.T) {
	tr := NewTracker(4)
	for fd := uint32(0); fd < 10; fd++ {
		tr.Feed(Segment{PID: 1, FD: fd, Timestamp: uint64(fd), Egress: true, Data: []byte("GET / HTTP/1.1\r\n\r\n")})
	}
	if tr.Len() != 4 || tr.Evicted != 6 {
		t.Fatalf("len %d evicted %d", tr.Len(), tr.Evicted)
	}
	c := tr.conns[connKey{1, 9}] // the newest is always present
	for i := 0; i < 200; i++ {
		tr.Feed(Segment{PID: 1, FD: 9, Timestamp: 100, Egress: true, Data: []byte("GET / HTTP/1.1\r\n\r\n")})
	}
	if len(c.pending) != maxPending {
		t.Fatalf("pending = %d", len(c.pending))
	}
}
