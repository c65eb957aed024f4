package l7

import (
	"encoding/binary"
	"strconv"
	"strings"
)

var dnsTypes = map[uint16]string{
	1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
	33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY",
}

var dnsRcodes = [...]string{"NoError", "FormErr", "ServFail", "NXDomain", "NotImp", "Refused",
	"YXDomain", "YXRRSet", "NXRRSet", "NotAuth", "NotZone"}

func dnsHeader(b []byte) (id, flags, qd uint16, ok bool) {
	if len(b) < 12 {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint16(b[4:]), true
}

// dnsQuestion parses the first question (name, type).
func dnsQuestion(b []byte) (string, string, bool) {
	off := 12
	var labels []string
	for {
		if off >= len(b) {
			return "", "", false
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		// Questions are never compressed; 0xc0 pointers are malformed here.
		if l > 63 || off+l > len(b) || len(labels) > 127 {
			return "", "", false
		}
		labels = append(labels, string(b[off:off+l]))
		off += l
	}
	if off+4 > len(b) {
		return "", "", false
	}
	qt := binary.BigEndian.Uint16(b[off:])
	name := strings.Join(labels, ".")
	if !printable(name) {
		return "", "", false
	}
	t, ok := dnsTypes[qt]
	if !ok {
		t = "TYPE" + strconv.Itoa(int(qt))
	}
	return name, t, true
}

// ParseDNSQuery parses a standard query with exactly one question.
func ParseDNSQuery(b []byte) (Request, bool) {
	id, flags, qd, ok := dnsHeader(b)
	if !ok || flags&0x8000 != 0 || (flags>>11)&0xf != 0 || qd != 1 {
		return Request{}, false
	}
	name, qt, ok := dnsQuestion(b)
	if !ok {
		return Request{}, false
	}
	return Request{Protocol: DNS, DNSID: id, QName: name, QType: qt, Operation: qt, Datagram: true}, true
}

// ParseDNSResponse parses a response header (and question, for its type).
func ParseDNSResponse(b []byte) (Response, bool) {
	id, flags, _, ok := dnsHeader(b)
	if !ok || flags&0x8000 == 0 || (flags>>11)&0xf != 0 {
		return Response{}, false
	}
	rc := int(flags & 0xf)
	r := Response{Protocol: DNS, DNSID: id}
	if rc < len(dnsRcodes) {
		r.RCode = dnsRcodes[rc]
	} else {
		r.RCode = "RCODE" + strconv.Itoa(rc)
	}
	if rc != 0 {
		r.ErrorType = r.RCode
	}
	return r, true
}
