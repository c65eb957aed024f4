package l7

import (
	"bytes"
	"encoding/binary"
)

// PostgreSQL wire protocol v3. Messages are a type byte and a big-endian
// int32 length that counts itself but not the type byte.

const pgMaxMessage = 1 << 30

func pgMessage(b []byte) (typ byte, body []byte, next []byte, complete bool, ok bool) {
	if len(b) < 5 {
		return 0, nil, nil, false, false
	}
	l := binary.BigEndian.Uint32(b[1:5])
	if l < 4 || l > pgMaxMessage {
		return 0, nil, nil, false, false
	}
	end := 1 + int(l)
	if end > len(b) {
		return b[0], b[5:], nil, false, true
	}
	return b[0], b[5:end], b[end:], true, true
}

// cstring reads a NUL-terminated string; truncated is true when the NUL was
// not captured.
func cstring(b []byte) (s string, rest []byte, truncated bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), nil, true
	}
	return string(b[:i]), b[i+1:], false
}

// ParsePostgresRequest parses a simple Query ('Q') or an extended-protocol
// batch (Parse/Bind/Execute). Parse-only batches (statement preparation)
// return ok with Skip set: they teach the statement's operation but are not
// counted as operations themselves.
func ParsePostgresRequest(b []byte) (Request, bool) {
	r := Request{Protocol: Postgres}
	first := true
	executes := false
loop:
	for len(b) > 0 {
		typ, body, next, complete, ok := pgMessage(b)
		if !ok {
			if first {
				return Request{}, false
			}
			break
		}
		switch typ {
		case 'Q':
			if !first {
				return Request{}, false
			}
			q, _, _ := cstring(body)
			op := sqlOperation(q)
			if op == "" || !printable(q) {
				return Request{}, false
			}
			r.Operation, r.Statement = op, truncate(q, 256)
			return r, true
		case 'P':
			name, rest, trunc := cstring(body)
			if trunc || !printable(name) {
				return Request{}, false
			}
			q, _, _ := cstring(rest)
			op := sqlOperation(q)
			if op == "" || !printable(q) {
				return Request{}, false
			}
			if r.PGParsed == nil {
				r.PGParsed = map[string]string{}
			}
			r.PGParsed[name] = op
			r.Operation, r.Statement = op, truncate(q, 256)
		case 'B':
			portal, rest, trunc := cstring(body)
			if trunc || !printable(portal) {
				return Request{}, false
			}
			stmt, _, trunc := cstring(rest)
			if trunc || !printable(stmt) {
				return Request{}, false
			}
			r.PGStatement = stmt
			if op, ok := r.PGParsed[stmt]; ok {
				r.Operation = op
			}
			if first && !complete {
				// A lone truncated Bind is too weak a signal to detect the
				// protocol from.
				return Request{}, false
			}
		case 'E':
			if first {
				return Request{}, false
			}
			executes = true
		case 'D', 'S', 'H', 'C':
			if first {
				return Request{}, false
			}
		default:
			if first {
				return Request{}, false
			}
			break loop
		}
		first = false
		if !complete {
			break
		}
		b = next
	}
	if first {
		return Request{}, false
	}
	if !executes && r.PGStatement == "" {
		// Parse/Describe/Sync: a preparation round trip only. A batch cut
		// off before its Execute is still counted when it bound a statement.
		r.Skip = true
	}
	return r, true
}

var pgBackendTypes = [256]bool{
	'1': true, '2': true, '3': true, 'A': true, 'C': true, 'D': true, 'E': true, 'G': true,
	'H': true, 'I': true, 'K': true, 'N': true, 'R': true, 'S': true, 'T': true, 'V': true,
	'W': true, 'Z': true, 'c': true, 'd': true, 'n': true, 's': true, 't': true, 'v': true,
}

// ParsePostgresResponse parses backend messages; an ErrorResponse anywhere
// in the captured bytes makes the operation failed with its SQLSTATE.
func ParsePostgresResponse(b []byte) (Response, bool) {
	r := Response{Protocol: Postgres}
	first := true
	for len(b) > 0 {
		typ, body, next, complete, ok := pgMessage(b)
		if !ok || !pgBackendTypes[typ] {
			if first {
				return Response{}, false
			}
			break
		}
		first = false
		if typ == 'E' {
			r.ErrorType = pgSQLState(body)
			if r.ErrorType == "" {
				r.ErrorType = "error"
			}
			return r, true
		}
		if !complete {
			break
		}
		b = next
	}
	return r, !first
}

func pgSQLState(body []byte) string {
	for len(body) > 0 && body[0] != 0 {
		code := body[0]
		v, rest, trunc := cstring(body[1:])
		if code == 'C' {
			if trunc || len(v) != 5 || !printable(v) {
				return ""
			}
			return v
		}
		if trunc {
			return ""
		}
		body = rest
	}
	return ""
}
