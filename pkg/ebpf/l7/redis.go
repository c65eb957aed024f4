package l7

import (
	"bytes"
	"strconv"
	"strings"
)

// ParseRedisRequest parses a RESP command: an array of bulk strings whose
// first element is the command name ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").
func ParseRedisRequest(b []byte) (Request, bool) {
	if len(b) < 4 || b[0] != '*' {
		return Request{}, false
	}
	n, rest, ok := respInt(b[1:])
	if !ok || n < 1 || n > 1<<20 {
		return Request{}, false
	}
	if len(rest) < 2 || rest[0] != '$' {
		return Request{}, false
	}
	l, rest, ok := respInt(rest[1:])
	if !ok || l < 1 || l > 64 || len(rest) < l+2 {
		return Request{}, false
	}
	cmd := rest[:l]
	if rest[l] != '\r' || rest[l+1] != '\n' {
		return Request{}, false
	}
	for _, c := range cmd {
		if !isAlpha(c) && c != '_' && c != '-' && c != '.' && (c < '0' || c > '9') {
			return Request{}, false
		}
	}
	return Request{Protocol: Redis, Operation: strings.ToUpper(string(cmd))}, true
}

// respInt parses "<digits>\r\n".
func respInt(b []byte) (int, []byte, bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 1 || i > 10 {
		return 0, nil, false
	}
	n, err := strconv.Atoi(string(b[:i]))
	if err != nil {
		return 0, nil, false
	}
	return n, b[i+2:], true
}

// ParseRedisResponse recognises RESP2/RESP3 replies; error replies
// ("-WRONGTYPE ...") give their error prefix as ErrorType.
func ParseRedisResponse(b []byte) (Response, bool) {
	if len(b) < 3 {
		return Response{}, false
	}
	r := Response{Protocol: Redis}
	switch b[0] {
	case '-', '!':
		msg := b[1:]
		if b[0] == '!' {
			// RESP3 blob error: "!<len>\r\n<PREFIX> ..."
			_, rest, ok := respInt(b[1:])
			if !ok {
				return Response{}, false
			}
			msg = rest
		}
		end := bytes.IndexAny(msg, " \r\n")
		if end < 0 {
			end = len(msg)
		}
		prefix := string(msg[:end])
		if prefix == "" || len(prefix) > 32 || !printable(prefix) {
			prefix = "ERR"
		}
		r.ErrorType = prefix
		return r, true
	case '+', ':', '$', '*', '_', ',', '#', '=', '(', '%', '~', '>', '|':
		if !bytes.Contains(b[:min(len(b), 64)], []byte("\r\n")) {
			return Response{}, false
		}
		return r, true
	}
	return Response{}, false
}
