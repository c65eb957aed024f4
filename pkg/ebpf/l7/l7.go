// Package l7 detects application protocols in the first bytes of socket
// reads and writes captured by the eBPF programs, parses HTTP/1.x,
// PostgreSQL, MySQL, Redis and DNS messages, and pairs requests with
// responses per connection to measure latency.
//
// Parsers only see a prefix of each message (the kernel copies at most a few
// hundred bytes per syscall), so they extract what is in the headers and
// never assume the whole message is present. They must never panic on any
// input: they are fuzz-tested.
package l7

import (
	"strings"
)

// Protocol is a detected application protocol.
type Protocol uint8

const (
	Unknown Protocol = iota
	HTTP
	Postgres
	MySQL
	Redis
	DNS
)

func (p Protocol) String() string {
	switch p {
	case HTTP:
		return "http"
	case Postgres:
		return "postgresql"
	case MySQL:
		return "mysql"
	case Redis:
		return "redis"
	case DNS:
		return "dns"
	}
	return "unknown"
}

// Request is what a parser extracted from a request message.
type Request struct {
	Protocol Protocol
	// HTTP
	Method string
	Path   string // without query string
	Host   string // Host header when it was captured
	// Databases: the operation (SQL statement keyword or Redis command).
	Operation string
	// Statement is the (possibly truncated) query text, for spans.
	Statement string
	// PGStatement names the prepared statement a Bind refers to (PostgreSQL
	// extended protocol); the tracker resolves Operation from an earlier
	// Parse on the same connection when the batch had none.
	PGStatement string
	// PGParsed maps statement names to operations, from Parse messages.
	PGParsed map[string]string
	// Skip marks messages that are recognised but are not operations of
	// their own (PostgreSQL statement preparation).
	Skip bool
	// DNS
	DNSID    uint16
	QType    string
	QName    string
	Datagram bool
}

// Response is what a parser extracted from a response message.
type Response struct {
	Protocol Protocol
	// HTTP status code.
	Status int
	// ErrorType is empty on success; otherwise a low-cardinality error class
	// (SQLSTATE, MySQL error code, Redis error prefix, HTTP 5xx status).
	ErrorType string
	// DNS
	DNSID uint16
	RCode string
}

// ParseRequest tries every protocol's request parser. datagram is true for
// UDP payloads (only DNS is tried then).
func ParseRequest(b []byte, datagram bool) (Request, bool) {
	if datagram {
		return ParseDNSQuery(b)
	}
	if r, ok := ParseHTTPRequest(b); ok {
		return r, true
	}
	if r, ok := ParsePostgresRequest(b); ok {
		return r, true
	}
	if r, ok := ParseMySQLRequest(b); ok {
		return r, true
	}
	if r, ok := ParseRedisRequest(b); ok {
		return r, true
	}
	return Request{}, false
}

// parseRequestAs parses b with the parser of a known protocol.
func parseRequestAs(p Protocol, b []byte) (Request, bool) {
	switch p {
	case HTTP:
		return ParseHTTPRequest(b)
	case Postgres:
		return ParsePostgresRequest(b)
	case MySQL:
		return ParseMySQLRequest(b)
	case Redis:
		return ParseRedisRequest(b)
	case DNS:
		return ParseDNSQuery(b)
	}
	return Request{}, false
}

// ParseResponse parses b as a response of protocol p.
func ParseResponse(p Protocol, b []byte) (Response, bool) {
	switch p {
	case HTTP:
		return ParseHTTPResponse(b)
	case Postgres:
		return ParsePostgresResponse(b)
	case MySQL:
		return ParseMySQLResponse(b)
	case Redis:
		return ParseRedisResponse(b)
	case DNS:
		return ParseDNSResponse(b)
	}
	return Response{}, false
}

// sqlOperation returns the statement keyword of a SQL text (SELECT, INSERT,
// ...), skipping whitespace, comments and opening parentheses.
func sqlOperation(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n(;")
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
			continue
		case strings.HasPrefix(q, "/*"):
			i := strings.Index(q, "*/")
			if i < 0 {
				return ""
			}
			q = q[i+2:]
			continue
		}
		break
	}
	end := 0
	for end < len(q) && end < 32 && isAlpha(q[end]) {
		end++
	}
	if end == 0 || (end < len(q) && isAlnum(q[end])) {
		return ""
	}
	return strings.ToUpper(q[:end])
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool { return isAlpha(c) || (c >= '0' && c <= '9') || c == '_' }

// printable reports whether b looks like text (used to reject binary noise
// that happens to match a protocol's framing).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c == 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
