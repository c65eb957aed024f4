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
}

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

	if c.role == RoleUnknown {
		if c.failures >= maxDetectTries {
			return Exchange{}, false
		}
		req, ok := ParseRequest(s.Data, s.Datagram)
		if !ok {
			c.failures++
			return Exchange{}, false
		}
		c.proto = req.Protocol
		if s.Egress {
			c.role = RoleClient
		} else {
			c.role = RoleServer
		}
		t.addRequest(c, req, s.Timestamp)
		return Exchange{}, false
	}

	requestDir := (c.role == RoleClient) == s.Egress
	if requestDir {
		if req, ok := parseRequestAs(c.proto, s.Data); ok {
			t.addRequest(c, req, s.Timestamp)
		}
		return Exchange{}, false
	}
	if len(c.pending) == 0 {
		return Exchange{}, false
	}
	resp, ok := ParseResponse(c.proto, s.Data)
	if !ok {
		return Exchange{}, false
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
			return Exchange{}, false
		}
	}
	p := c.pending[idx]
	c.pending = append(c.pending[:idx], c.pending[idx+1:]...)
	if p.req.Skip {
		return Exchange{}, false
	}
	return Exchange{
		PID: s.PID, FD: s.FD, Role: c.role, Local: s.Local, Remote: s.Remote,
		Request: p.req, Response: resp, Start: p.ts, End: s.Timestamp,
	}, true
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

func (t *Tracker) evictOne() {
	var oldest connKey
	var oldestTS uint64
	first := true
	for k, c := range t.conns {
		if first || c.lastSeen < oldestTS {
			oldest, oldestTS, first = k, c.lastSeen, false
		}
	}
	delete(t.conns, oldest)
	t.Evicted++
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
