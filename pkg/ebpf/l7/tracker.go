package l7

import (
	"net/netip"
)

// Role of the traced process on a connection.
type Role uint8

const (
	RoleUnknown Role = iota
	RoleClient
	RoleServer
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return "unknown"
}

// Segment is one captured read or write.
type Segment struct {
	PID, FD uint32
	// Timestamp in monotonic nanoseconds.
	Timestamp uint64
	// Egress is true for data the process sent.
	Egress        bool
	Datagram      bool
	Local, Remote netip.AddrPort
	Data          []byte
}

// Exchange is a request paired with its response.
type Exchange struct {
	PID, FD       uint32
	Role          Role
	Local, Remote netip.AddrPort
	Request       Request
	Response      Response
	// Start is when the request was seen (client: written; server: read),
	// End when the response was seen; both monotonic nanoseconds.
	Start, End uint64
}

// Duration in seconds.
func (e *Exchange) Duration() float64 { return float64(e.End-e.Start) / 1e9 }

type connKey struct{ pid, fd uint32 }

type pending struct {
	req Request
	ts  uint64
}

type conn struct {
	proto    Protocol
	role     Role
	remote   netip.AddrPort
	pending  []pending
	pgStmts  map[string]string
	lastSeen uint64
	// failures counts segments that did not parse while the protocol was
	// still unknown; connections that never look like a known protocol
	// (TLS, custom binary) are then ignored cheaply.
	failures int
	// carry holds a short unparsable read to be joined with the next one in
	// the same direction: Go's net/http server reads the first byte of the
	// next keep-alive request on its own (a 1-byte background read).
	carry       []byte
	carryEgress bool
	carryTS     uint64
}

// maxCarry is the longest fragment kept for joining.
const maxCarry = 16

// Limits that keep the tracker's memory bounded whatever the traffic.
const (
	maxPending      = 64
	maxDetectTries  = 8
	maxPGStatements = 256
	// DefaultMaxConns bounds the number of tracked connections.
	DefaultMaxConns = 65536
)

// Tracker pairs requests and responses per (pid, fd). It is not safe for
// concurrent use: feed it from the goroutine that reads the ring buffer.
type Tracker struct {
	conns    map[connKey]*conn
	maxConns int
	// Evicted counts connections dropped to respect maxConns.
	Evicted uint64
}

// NewTracker returns a tracker with the given connection limit (0 = default).
func NewTracker(maxConns int) *Tracker {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return &Tracker{conns: map[connKey]*conn{}, maxConns: maxConns}
}

// Len is the number of tracked connections.
func (t *Tracker) Len() int { return len(t.conns) }

// Feed processes a segment and returns a completed exchange when s
// completes one.
func (t *Tracker) Feed(s Segment) (Exchange, bool) {
	k := connKey{s.PID, s.FD}
	c := t.conns[k]
	if c == nil || (c.remote != s.Remote && !s.Datagram) {
		// New connection, or the fd was reused for a different peer.
		if len(t.conns) >= t.maxConns {
			t.evictOne()
		}
		c = &conn{remote: s.Remote}
		t.conns[k] = c
	}
	c.lastSeen = s.Timestamp
	if len(s.Data) == 0 {
		return Exchange{}, false
	}
	requestDir := c.role == RoleUnknown || (c.role == RoleClient) == s.Egress
	if len(c.carry) > 0 && c.carryEgress == s.Egress && !s.Datagram {
		joined := append(c.carry, s.Data...)
		ts := c.carryTS
		c.carry = nil
		if ex, ok, parsed := t.feed(c, s, joined, ts); parsed {
			return ex, ok
		}
		// The fragment was not the start of this message (e.g. the tail
		// of a request body): parse the segment on its own.
	}
	c.carry = nil
	ex, ok, parsed := t.feed(c, s, s.Data, s.Timestamp)
	if !parsed && requestDir && len(s.Data) < maxCarry && !s.Datagram {
		c.carry = append([]byte(nil), s.Data...)
		c.carryEgress, c.carryTS = s.Egress, s.Timestamp
	}
	return ex, ok
}

// feed handles one (possibly joined) segment; parsed reports whether data
// was recognised as a message.
func (t *Tracker) feed(c *conn, s Segment, data []byte, ts uint64) (Exchange, bool, bool) {
	if c.role == RoleUnknown {
		if c.failures >= maxDetectTries {
			return Exchange{}, false, true
		}
		req, ok := ParseRequest(data, s.Datagram)
		if !ok {
			c.failures++
			return Exchange{}, false, false
		}
		c.proto = req.Protocol
		if s.Egress {
			c.role = RoleClient
		} else {
			c.role = RoleServer
		}
		t.addRequest(c, req, ts)
		return Exchange{}, false, true
	}

	requestDir := (c.role == RoleClient) == s.Egress
	if requestDir {
		req, ok := parseRequestAs(c.proto, data)
		if ok {
			t.addRequest(c, req, ts)
		}
		return Exchange{}, false, ok
	}
	if len(c.pending) == 0 {
		return Exchange{}, false, true
	}
	resp, ok := ParseResponse(c.proto, data)
	if !ok {
		return Exchange{}, false, false
	}
	if c.proto == HTTP && resp.Status >= 100 && resp.Status < 200 && resp.Status != 101 {
		// Interim response (100 Continue, 103 Early Hints): the final one
		// follows for the same request.
		return Exchange{}, false, true
	}
	idx := 0
	if c.proto == DNS {
		idx = -1
		for i, p := range c.pending {
			if p.req.DNSID == resp.DNSID {
				idx = i
				break
			}
		}
		if idx < 0 {
			return Exchange{}, false, true
		}
	}
	p := c.pending[idx]
	c.pending = append(c.pending[:idx], c.pending[idx+1:]...)
	if p.req.Skip {
		return Exchange{}, false, true
	}
	return Exchange{
		PID: s.PID, FD: s.FD, Role: c.role, Local: s.Local, Remote: s.Remote,
		Request: p.req, Response: resp, Start: p.ts, End: ts,
	}, true, true
}

func (t *Tracker) addRequest(c *conn, req Request, ts uint64) {
	if req.Protocol == Postgres {
		for name, op := range req.PGParsed {
			if c.pgStmts == nil {
				c.pgStmts = map[string]string{}
			}
			if len(c.pgStmts) < maxPGStatements {
				c.pgStmts[name] = op
			}
		}
		req.PGParsed = nil
		if req.Operation == "" && req.PGStatement != "" {
			req.Operation = c.pgStmts[req.PGStatement]
		}
		if req.Operation == "" {
			req.Operation = "EXECUTE"
		}
	}
	if len(c.pending) >= maxPending {
		// The peer never answered (or we missed responses): forget the oldest.
		c.pending = c.pending[1:]
	}
	c.pending = append(c.pending, pending{req: req, ts: ts})
}

// evictOne drops an arbitrary connection (Go map iteration order is
// random): O(1), unlike finding the least recently used one, which matters
// exactly when the table is full. Sweep removes idle connections first in
// normal operation.
func (t *Tracker) evictOne() {
	for k := range t.conns {
		delete(t.conns, k)
		t.Evicted++
		return
	}
}

// Sweep forgets connections idle since before cutoff (monotonic ns).
func (t *Tracker) Sweep(cutoff uint64) {
	for k, c := range t.conns {
		if c.lastSeen < cutoff {
			delete(t.conns, k)
		}
	}
}

// ForgetPID drops every connection of an exited process.
func (t *Tracker) ForgetPID(pid uint32) {
	for k := range t.conns {
		if k.pid == pid {
			delete(t.conns, k)
		}
	}
}
