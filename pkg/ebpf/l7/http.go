package l7

import (
	"bytes"
	"strconv"
	"strings"
)

var httpMethods = []string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"}

// ParseHTTPRequest parses an HTTP/1.x request line and, when captured, the
// Host header.
func ParseHTTPRequest(b []byte) (Request, bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp < 3 || sp > 7 {
		return Request{}, false
	}
	method := string(b[:sp])
	known := false
	for _, m := range httpMethods {
		if m == method {
			known = true
			break
		}
	}
	if !known {
		return Request{}, false
	}
	rest := b[sp+1:]
	lineEnd := bytes.IndexByte(rest, '\n')
	line := rest
	if lineEnd >= 0 {
		line = rest[:lineEnd]
	}
	line = bytes.TrimSuffix(line, []byte{'\r'})
	sp2 := bytes.LastIndexByte(line, ' ')
	var target string
	if sp2 < 0 {
		// Only a prefix of a very long request line was captured.
		if lineEnd >= 0 {
			return Request{}, false
		}
		target = string(line)
	} else {
		if !bytes.HasPrefix(line[sp2+1:], []byte("HTTP/1.")) {
			return Request{}, false
		}
		target = string(line[:sp2])
	}
	if target == "" || (target[0] != '/' && target != "*" && !strings.Contains(target, "://") && method != "CONNECT") {
		return Request{}, false
	}
	if !printable(target) {
		return Request{}, false
	}
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	if i := strings.Index(target, "://"); i >= 0 {
		// Absolute form (proxies): keep the path only.
		rest := target[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			target = rest[j:]
		} else {
			target = "/"
		}
	}
	r := Request{Protocol: HTTP, Method: method, Path: target}
	if lineEnd >= 0 {
		r.Host = headerValue(rest[lineEnd+1:], "host")
	}
	return r, true
}

// headerValue finds a header in a (possibly truncated) header block.
func headerValue(hdrs []byte, name string) string {
	for len(hdrs) > 0 {
		end := bytes.IndexByte(hdrs, '\n')
		if end < 0 {
			return "" // truncated line: the value may be incomplete
		}
		line := bytes.TrimSuffix(hdrs[:end], []byte{'\r'})
		hdrs = hdrs[end+1:]
		if len(line) == 0 {
			return ""
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			s := string(bytes.TrimSpace(v))
			if printable(s) {
				return s
			}
			return ""
		}
	}
	return ""
}

// ParseHTTPResponse parses an HTTP/1.x status line.
func ParseHTTPResponse(b []byte) (Response, bool) {
	if len(b) < 12 || !bytes.HasPrefix(b, []byte("HTTP/1.")) || b[8] != ' ' {
		return Response{}, false
	}
	code, err := strconv.Atoi(string(b[9:12]))
	if err != nil || code < 100 || code > 599 {
		return Response{}, false
	}
	if len(b) > 12 && b[12] != ' ' && b[12] != '\r' && b[12] != '\n' {
		return Response{}, false
	}
	r := Response{Protocol: HTTP, Status: code}
	if code >= 500 {
		r.ErrorType = strconv.Itoa(code)
	}
	return r, true
}

// Route collapses the variable parts of a URL path so that it can be used as
// a low-cardinality label: numeric segments, UUIDs and long hex/base64-ish IDs
// become {id}. "/users/123/orders/9f8e7d6c5b4a" -> "/users/{id}/orders/{id}".
func Route(path string) string {
	if path == "" {
		return "/"
	}
	if path[0] != '/' {
		return path
	}
	// One pass over the segments; the path is returned as is (no
	// allocation) unless a segment is replaced. This runs once per request.
	var b strings.Builder
	start := 1
	for i := 1; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			continue
		}
		seg := path[start:i]
		if isIDSegment(seg) {
			if b.Cap() == 0 {
				b.Grow(len(path) + 8)
				b.WriteString(path[:start])
			}
			b.WriteString("{id}")
		} else if b.Cap() != 0 {
			b.WriteString(seg)
		}
		if b.Cap() != 0 && i < len(path) {
			b.WriteByte('/')
		}
		start = i + 1
	}
	r := path
	if b.Cap() != 0 {
		r = b.String()
	}
	// Truncated or pathological paths must not explode cardinality either.
	if len(r) > 128 {
		r = r[:128]
	}
	return r
}

func isIDSegment(s string) bool {
	if s == "" {
		return false
	}
	digits, hex, letters := 0, 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'):
			hex++
			letters++
		case c == '-':
		case isAlpha(c) || c == '_' || c == '.' || c == '~' || c == '%':
			letters++
		default:
			letters++
		}
	}
	if digits == len(s) {
		return true // 123
	}
	if isUUID(s) {
		return true
	}
	// Hex IDs (object IDs, hashes): all hex and at least one digit, 8+ chars.
	if hex == len(s) && len(s) >= 8 && digits > 0 {
		return true
	}
	// Long tokens mixing letters and digits (base64/ULID-like) are IDs, words
	// with a version digit ("v2", "oauth2") are not.
	return len(s) >= 16 && digits >= 3 && digits+letters == len(s)
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !((c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'f')) {
			return false
		}
	}
	return true
}
