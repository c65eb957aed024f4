package agent

import (
	"strings"
	"testing"
)

const netstatSample = `TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 7 9 123
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
`

func TestParseListenDrops(t *testing.T) {
	v, err := parseListenDrops([]byte(netstatSample))
	if err != nil || v != 9 {
		t.Fatalf("parseListenDrops = %d, %v; want 9", v, err)
	}
	for name, bad := range map[string]string{
		"no TcpExt":       "IpExt: InNoRoutes\nIpExt: 0\n",
		"no field":        "TcpExt: SyncookiesSent\nTcpExt: 0\n",
		"no value":        "TcpExt: SyncookiesSent ListenDrops\nTcpExt: 0\n",
		"not a number":    "TcpExt: ListenDrops\nTcpExt: x\n",
		"names only":      "TcpExt: ListenDrops\n",
		"negative number": "TcpExt: ListenDrops\nTcpExt: -1\n",
	} {
		if v, err := parseListenDrops([]byte(bad)); err == nil {
			t.Errorf("%s: parsed %d from %q", name, v, bad)
		}
	}
}

func FuzzParseListenDrops(f *testing.F) {
	f.Add([]byte(netstatSample))
	f.Add([]byte("TcpExt: ListenDrops\nTcpExt: 18446744073709551615\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseListenDrops(b)
		if err == nil && v > 0 && !strings.Contains(string(b), "ListenDrops") {
			t.Fatalf("parsed %d from input without ListenDrops", v)
		}
	})
}
