package ebpf

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRing lays records out the way the kernel does, in ordinary memory:
// the data area is written twice in a row, as the kernel maps its pages.
type fakeRing struct {
	rg         *ring
	cons, prod uint64
	size       uint64
}

func newFakeRing(size uint64) *fakeRing {
	f := &fakeRing{size: size}
	f.rg = &ring{
		consPos: &f.cons,
		prodPos: &f.prod,
		data:    make([]byte, 2*size),
		mask:    size - 1,
	}
	return f
}

func (f *fakeRing) put(off uint64, b []byte) {
	for i, c := range b {
		p := (off + uint64(i)) & f.rg.mask
		f.rg.data[p] = c
		f.rg.data[p+f.size] = c
	}
}

// add appends a record with the given header flags and returns its start.
func (f *fakeRing) add(payload []byte, flags uint32) uint64 {
	start := f.prod
	hdr := make([]byte, ringHeaderSize)
	binary.LittleEndian.PutUint32(hdr, uint32(len(payload))|flags)
	f.put(start, hdr)
	f.put(start+ringHeaderSize, payload)
	f.prod = start + ringHeaderSize + (uint64(len(payload))+7)&^7
	return start
}

func (f *fakeRing) drain(t *testing.T) ([]string, bool) {
	t.Helper()
	var out []string
	got, err := f.rg.drain(func(b []byte) { out = append(out, string(b)) })
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	return out, got
}

func TestRingDrainsRecordsInOrderAcrossTheWrap(t *testing.T) {
	f := newFakeRing(64)
	// Records of 5, 8 and 13 bytes take 16, 16 and 24 bytes: the third
	// starts at 32 and the next round's records wrap past 64.
	var want []string
	for round := range 4 {
		for _, n := range []int{5, 8, 13} {
			p := bytes.Repeat([]byte{byte('a' + round)}, n)
			f.add(p, 0)
			want = append(want, string(p))
		}
		got, any := f.drain(t)
		if !any || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: drained %q (%v), want %q", round, got, any, want)
		}
		if f.cons != f.prod {
			t.Fatalf("round %d: consumer at %d, producer at %d", round, f.cons, f.prod)
		}
		want = want[:0]
	}
	if got, any := f.drain(t); any || len(got) != 0 {
		t.Fatalf("empty ring drained %q", got)
	}
}

func TestRingSkipsDiscardedAndStopsAtBusyRecords(t *testing.T) {
	f := newFakeRing(256)
	f.add([]byte("one"), 0)
	f.add([]byte("dropped"), ringDiscardBit)
	f.add([]byte("two"), 0)
	busy := f.add([]byte("three"), ringBusyBit)
	f.add([]byte("four"), 0)
	got, any := f.drain(t)
	if !any || fmt.Sprint(got) != "[one two]" {
		t.Fatalf("drained %q (%v), want [one two]", got, any)
	}
	// The record being written and everything after it stay for the next
	// drain; the space before it is given back.
	if f.cons != busy {
		t.Fatalf("consumer at %d, want %d (the busy record)", f.cons, busy)
	}
	// Submit clears the busy bit.
	f.put(busy, binary.LittleEndian.AppendUint32(nil, uint32(len("three"))))
	got, _ = f.drain(t)
	if fmt.Sprint(got) != "[three four]" {
		t.Fatalf("second drain %q, want [three four]", got)
	}
}

func TestRingReportsCorruptPositions(t *testing.T) {
	f := newFakeRing(64)
	f.add([]byte("abcdefgh"), 0)
	f.prod -= 4 // the record now runs past the producer position
	if _, err := f.rg.drain(func([]byte) {}); err == nil {
		t.Fatal("drain accepted a record that runs past the producer")
	}
}

type payloadHandler struct{ l7 chan string }

func (h payloadHandler) HandleL7(ev *L7Event) {
	if ev.Dir == Egress && bytes.HasPrefix(ev.Data, []byte("vigil-ring-")) {
		h.l7 <- string(ev.Data)
	}
}
func (payloadHandler) HandleTCP(*TCPEvent) {}

// After a poll interval without events the reader parks without a deadline;
// the kernel must then wake it for the next record, or that record would
// wait until the ring fills.
func TestReaderParksWhenIdleAndIsWokenByTheNextEvent(t *testing.T) {
	requireRoot(t)
	// PID 1 is excluded instead of this process, whose traffic is traced.
	tr, err := Load(Config{SelfPID: 1})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	h := payloadHandler{l7: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-h.l7:
				if got == msg {
					return
				}
			case <-timeout:
				t.Fatalf("no L7 event for %q (reader parked flag %d)", msg, atomic.LoadUint32(tr.l7.parked))
			}
		}
	}
	for round := range 3 {
		expect(fmt.Sprintf("vigil-ring-%d", round))
		deadline := time.Now().Add(10 * time.Second)
		for atomic.LoadUint32(tr.l7.parked) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the L7 reader did not park after its traffic stopped", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
