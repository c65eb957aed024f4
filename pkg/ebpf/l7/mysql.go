package l7

import (
	"strconv"
)

// MySQL client/server protocol: packets are a 3-byte little-endian payload
// length, a sequence id, then the payload. A command starts a new sequence
// (id 0); its response has id 1.

const (
	mysqlComQuery       = 0x03
	mysqlComStmtPrepare = 0x16
	mysqlComStmtExecute = 0x17
)

func mysqlPacket(b []byte) (payloadLen int, seq byte, payload []byte, ok bool) {
	if len(b) < 5 {
		return 0, 0, nil, false
	}
	payloadLen = int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	if payloadLen == 0 {
		return 0, 0, nil, false
	}
	payload = b[4:]
	if len(payload) > payloadLen {
		payload = payload[:payloadLen]
	}
	return payloadLen, b[3], payload, true
}

// ParseMySQLRequest parses COM_QUERY (operation from the SQL keyword) and
// COM_STMT_EXECUTE (operation EXECUTE).
func ParseMySQLRequest(b []byte) (Request, bool) {
	n, seq, p, ok := mysqlPacket(b)
	if !ok || seq != 0 {
		return Request{}, false
	}
	switch p[0] {
	case mysqlComQuery:
		q := string(p[1:])
		op := sqlOperation(q)
		if op == "" || !printable(q) {
			return Request{}, false
		}
		// The length must cover at least what was captured of the query.
		if n < len(p) {
			return Request{}, false
		}
		return Request{Protocol: MySQL, Operation: op, Statement: truncate(q, 256)}, true
	case mysqlComStmtExecute:
		// statement id (4), flags (1), iteration count (4, always 1).
		if n < 10 || len(p) < 10 || p[6] != 1 || p[7] != 0 || p[8] != 0 || p[9] != 0 {
			return Request{}, false
		}
		return Request{Protocol: MySQL, Operation: "EXECUTE"}, true
	case mysqlComStmtPrepare:
		q := string(p[1:])
		if sqlOperation(q) == "" || !printable(q) {
			return Request{}, false
		}
		// Preparation is a round trip of its own but not an operation.
		return Request{Protocol: MySQL, Operation: sqlOperation(q), Statement: truncate(q, 256), Skip: true}, true
	}
	return Request{}, false
}

// ParseMySQLResponse recognises OK, ERR, EOF and result-set headers.
func ParseMySQLResponse(b []byte) (Response, bool) {
	_, seq, p, ok := mysqlPacket(b)
	if !ok || seq != 1 {
		return Response{}, false
	}
	r := Response{Protocol: MySQL}
	switch p[0] {
	case 0x00, 0xfe:
		return r, true
	case 0xff:
		// ERR: code (2 bytes LE), then '#' and a 5-char SQLSTATE.
		if len(p) >= 9 && p[3] == '#' && printable(string(p[4:9])) {
			r.ErrorType = string(p[4:9])
		} else if len(p) >= 3 {
			r.ErrorType = strconv.Itoa(int(p[1]) | int(p[2])<<8)
		} else {
			r.ErrorType = "error"
		}
		return r, true
	}
	// Result set: a length-encoded column count.
	if p[0] >= 1 && p[0] < 0xfb {
		return r, true
	}
	return Response{}, false
}
