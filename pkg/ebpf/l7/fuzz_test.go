package l7

import (
	"net/netip"
	"testing"
)

// Each fuzz target checks the parsers never panic and that what they accept
// is consistent; the tracker is fed the same bytes in both directions so the
// pairing code sees adversarial input too.

func feedBoth(t *testing.T, b []byte, datagram bool) {
	tr := NewTracker(8)
	remote := netip.MustParseAddrPort("127.0.0.1:1")
	for i := 0; i < 3; i++ {
		tr.Feed(Segment{PID: 1, FD: 1, Timestamp: uint64(2 * i), Egress: true, Datagram: datagram, Remote: remote, Data: b})
		if ex, ok := tr.Feed(Segment{PID: 1, FD: 1, Timestamp: uint64(2*i + 1), Egress: false, Datagram: datagram, Remote: remote, Data: b}); ok && ex.End < ex.Start {
			t.Fatalf("negative duration %+v", ex)
		}
	}
}

func FuzzHTTP(f *testing.F) {
	f.Add([]byte("GET /users/42?x=1 HTTP/1.1\r\nHost: a:80\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("POST /a"))
	f.Add([]byte("CONNECT host:443 HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParseHTTPRequest(b); ok {
			if r.Method == "" || r.Protocol != HTTP {
				t.Fatalf("accepted without method: %+v", r)
			}
			_ = Route(r.Path)
		}
		if r, ok := ParseHTTPResponse(b); ok && (r.Status < 100 || r.Status > 599) {
			t.Fatalf("bad status %d", r.Status)
		}
		_ = Route(string(b))
		feedBoth(t, b, false)
	})
}

func FuzzPostgres(f *testing.F) {
	f.Add(pgMsg('Q', cstr("SELECT 1")))
	f.Add(append(pgMsg('P', cstr("s"), cstr("SELECT $1"), []byte{0, 0}), pgMsg('S')...))
	f.Add(append(pgMsg('B', cstr(""), cstr("s"), []byte{0, 0, 0, 0, 0, 0}), pgMsg('E', cstr(""), []byte{0, 0, 0, 0})...))
	f.Add(pgMsg('E', []byte("C23505\x00Mdup\x00\x00")))
	f.Add(pgMsg('Z', []byte{'I'}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParsePostgresRequest(b); ok && r.Protocol != Postgres {
			t.Fatalf("wrong protocol %+v", r)
		}
		if r, ok := ParsePostgresResponse(b); ok && r.Protocol != Postgres {
			t.Fatalf("wrong protocol %+v", r)
		}
		feedBoth(t, b, false)
	})
}

func FuzzMySQL(f *testing.F) {
	f.Add(mysqlPkt(0, append([]byte{0x03}, "SELECT 1"...)))
	f.Add(mysqlPkt(0, []byte{0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0}))
	f.Add(mysqlPkt(1, append([]byte{0xff, 0x7a, 0x04, '#'}, "42S02x"...)))
	f.Add(mysqlPkt(1, []byte{0x00, 0, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParseMySQLRequest(b); ok && r.Operation == "" {
			t.Fatalf("no operation %+v", r)
		}
		ParseMySQLResponse(b)
		feedBoth(t, b, false)
	})
}

func FuzzRedis(f *testing.F) {
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
	f.Add([]byte("-ERR unknown command\r\n"))
	f.Add([]byte("!21\r\nSYNTAX invalid syntax\r\n"))
	f.Add([]byte("$-1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParseRedisRequest(b); ok && r.Operation == "" {
			t.Fatalf("no operation %+v", r)
		}
		if r, ok := ParseRedisResponse(b); ok && b[0] == '-' && r.ErrorType == "" {
			t.Fatalf("error without type")
		}
		feedBoth(t, b, false)
	})
}

func FuzzDNS(f *testing.F) {
	f.Add(dnsMsg(1, 0x0100, "example.com", 1))
	f.Add(dnsMsg(1, 0x8183, "example.com", 28))
	f.Add(dnsMsg(2, 0x0100, "a.b.c.d.e", 65))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := ParseDNSQuery(b); ok && r.QType == "" {
			t.Fatalf("no qtype %+v", r)
		}
		if r, ok := ParseDNSResponse(b); ok && r.RCode == "" {
			t.Fatalf("no rcode %+v", r)
		}
		feedBoth(t, b, true)
	})
}
