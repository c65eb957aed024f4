package tracestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// bloomFilter is a trace-ID bloom filter stored as a block's "bloom" file:
//
//	"VTBF" | version byte (1) | k byte | m uint64 LE (bits) | bits (m/8 bytes)
//
// Trace IDs are random in practice but not always (tests, some Zipkin
// clients), so the two base hashes come from a splitmix64 finaliser over each
// half of the ID rather than the raw bytes; probe i is h1 + i*h2 mod m.
type bloomFilter struct {
	k    uint8
	m    uint64
	bits []byte
}

const bloomMagic = "VTBF"

// newBloom sizes a filter for n IDs at false-positive rate p.
func newBloom(n int, p float64) *bloomFilter {
	if n < 1 {
		n = 1
	}
	m := uint64(math.Ceil(-float64(n) * math.Log(p) / (math.Ln2 * math.Ln2)))
	m = (m + 63) &^ 63
	k := uint8(math.Max(1, math.Round(float64(m)/float64(n)*math.Ln2)))
	return &bloomFilter{k: k, m: m, bits: make([]byte, m/8)}
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func bloomHashes(id TraceID) (uint64, uint64) {
	h1 := mix64(binary.LittleEndian.Uint64(id[:8]) ^ 0x9e3779b97f4a7c15)
	h2 := mix64(binary.LittleEndian.Uint64(id[8:]) ^ h1)
	return h1, h2 | 1
}

func (b *bloomFilter) add(id TraceID) {
	h1, h2 := bloomHashes(id)
	for i := uint64(0); i < uint64(b.k); i++ {
		bit := (h1 + i*h2) % b.m
		b.bits[bit/8] |= 1 << (bit % 8)
	}
}

func (b *bloomFilter) mayContain(id TraceID) bool {
	h1, h2 := bloomHashes(id)
	for i := uint64(0); i < uint64(b.k); i++ {
		bit := (h1 + i*h2) % b.m
		if b.bits[bit/8]&(1<<(bit%8)) == 0 {
			return false
		}
	}
	return true
}

func (b *bloomFilter) marshal() []byte {
	out := make([]byte, 0, 14+len(b.bits))
	out = append(out, bloomMagic...)
	out = append(out, 1, b.k)
	out = binary.LittleEndian.AppendUint64(out, b.m)
	return append(out, b.bits...)
}

func unmarshalBloom(buf []byte) (*bloomFilter, error) {
	if len(buf) < 14 || string(buf[:4]) != bloomMagic {
		return nil, errors.New("bloom filter: bad magic")
	}
	if buf[4] != 1 {
		return nil, fmt.Errorf("bloom filter: unsupported version %d", buf[4])
	}
	b := &bloomFilter{k: buf[5], m: binary.LittleEndian.Uint64(buf[6:14]), bits: buf[14:]}
	if b.k == 0 || b.m == 0 || b.m%8 != 0 || uint64(len(b.bits)) != b.m/8 {
		return nil, fmt.Errorf("bloom filter: inconsistent size (k=%d m=%d len=%d)", b.k, b.m, len(b.bits))
	}
	return b, nil
}
