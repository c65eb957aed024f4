package ebpf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// How often a reader drains its ring while events flow. L7 events and TCP
// connection events are submitted without waking it (see batch_flags in
// agent.bpf.c), so this bounds their delay; every drain is a wakeup of the
// agent, which on a node with traffic is most of its fixed cost. Metrics
// are exported every 15s and spans every 5s, so neither delay shows; the
// L7 one is shorter because a batch is also a burst of agent CPU next to
// the node's applications. Bursts of traffic that fill a ring faster wake
// its reader early (the kernel's byte thresholds), and exec events, which
// name processes that may be short-lived, wake it at once.
const (
	l7PollInterval  = 250 * time.Millisecond
	tcpPollInterval = time.Second
)

// Layout of a BPF ring buffer record header (kernel/bpf/ringbuf.c): a
// 32-bit length whose two top bits say the record is still being written or
// was discarded, then a 32-bit page offset the reader does not need.
const (
	ringHeaderSize = 8
	ringBusyBit    = 1 << 31
	ringDiscardBit = 1 << 30
	// ringBusySpins bounds how often drain yields for a record another CPU
	// is still writing (between reserve and submit: well under a
	// microsecond) before it leaves the record to the next drain.
	ringBusySpins = 64
)

// ring reads a BPF ring buffer map in place and waits for it in Go's
// netpoller. Records are handed to the handler straight from the shared
// memory, and neither reading nor waiting is a syscall of the reading
// goroutine: cilium/ebpf's ringbuf.Reader calls epoll_wait at least twice
// per drain, and each such syscall wakes the Go runtime's sysmon from its
// idle sleep, after which it polls every 20µs for a while — on a node with
// traffic, most of the agent's fixed CPU cost.
type ring struct {
	// f is a duplicate of the map fd registered with the netpoller; it
	// reports readable when the kernel wakes the ring's waiters.
	f *os.File
	// consPage is the consumer position page (read-write); dataPages is
	// the producer position page followed by the data pages, mapped twice
	// in a row so that a record that wraps around is contiguous.
	consPage, dataPages []byte
	consPos, prodPos    *uint64
	data                []byte
	mask                uint64
	// parked is the ring's reader_parked flag in memory shared with the
	// BPF programs.
	parked *uint32
}

func newRing(m *ebpf.Map, parked *uint32) (*ring, error) {
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	if size <= 0 || size&(size-1) != 0 || size%page != 0 {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two multiple of the page size", size)
	}
	fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating ring buffer fd: %w", err)
	}
	rg := &ring{parked: parked}
	fail := func(err error) (*ring, error) {
		rg.unmap()
		if rg.f != nil {
			rg.f.Close()
		} else {
			unix.Close(fd)
		}
		return nil, err
	}
	if rg.consPage, err = unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fail(fmt.Errorf("mapping ring buffer consumer page: %w", err))
	}
	if rg.dataPages, err = unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return fail(fmt.Errorf("mapping ring buffer data pages: %w", err))
	}
	rg.consPos = (*uint64)(unsafe.Pointer(&rg.consPage[0]))
	rg.prodPos = (*uint64)(unsafe.Pointer(&rg.dataPages[0]))
	rg.data = rg.dataPages[page:]
	rg.mask = uint64(size - 1)
	if err := unix.SetNonblock(fd, true); err != nil {
		return fail(fmt.Errorf("making ring buffer fd non-blocking: %w", err))
	}
	rg.f = os.NewFile(uintptr(fd), "ringbuf")
	// Deadlines are only supported on fds the netpoller accepted.
	if err := rg.f.SetReadDeadline(time.Time{}); err != nil {
		return fail(fmt.Errorf("ring buffer fd cannot be polled: %w", err))
	}
	return rg, nil
}

// drain passes every committed record to fn, in order, and reports whether
// there was any, or one still being written (which the next drain reads).
// The slice passed to fn is only valid during the call: the space is given
// back to the kernel as soon as fn returns.
func (rg *ring) drain(fn func([]byte)) (bool, error) {
	cons := atomic.LoadUint64(rg.consPos)
	got, spins := false, 0
	for {
		prod := atomic.LoadUint64(rg.prodPos)
		if cons == prod {
			return got, nil
		}
		if prod-cons < ringHeaderSize {
			return got, fmt.Errorf("ring buffer: %d bytes left at %d, less than a record header", prod-cons, cons)
		}
		// The atomic load pairs with the kernel's release of the header
		// at submit: once the busy bit is clear, the record's data is
		// visible.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&rg.data[cons&rg.mask])))
		if hdr&ringBusyBit != 0 {
			if spins++; spins > ringBusySpins {
				return true, nil
			}
			runtime.Gosched()
			continue
		}
		n := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
		next := cons + ringHeaderSize + (n+7)&^7
		if next > prod {
			return got, fmt.Errorf("ring buffer: record of %d bytes at %d runs past the producer position %d", n, cons, prod)
		}
		if hdr&ringDiscardBit == 0 {
			start := (cons + ringHeaderSize) & rg.mask
			fn(rg.data[start : start+n])
			got = true
		}
		cons = next
		atomic.StoreUint64(rg.consPos, cons)
	}
}

// wait parks until the ring's fd reports data (or had reported it since
// the last wait: the netpoller is edge-triggered and latches readiness) or
// the deadline set on rg.f passes.
func (rg *ring) wait(rc syscall.RawConn) error {
	first := true
	return rc.Read(func(uintptr) bool {
		if first {
			first = false
			return false // not ready yet: wait for readiness
		}
		return true
	})
}

// interrupt makes a pending and every later wait return.
func (rg *ring) interrupt() {
	rg.f.Close()
}

// close unmaps the ring; no reader may be running.
func (rg *ring) close() {
	rg.f.Close()
	rg.unmap()
}

func (rg *ring) unmap() {
	if rg.dataPages != nil {
		unix.Munmap(rg.dataPages)
		rg.dataPages = nil
	}
	if rg.consPage != nil {
		unix.Munmap(rg.consPage)
		rg.consPage = nil
	}
}

// readLoop reads rg until the tracer is closed. While events flow it
// drains every poll interval. After a whole interval without any it parks
// without a deadline, having set the ring's reader_parked flag: the kernel
// wakes it for the next record. An idle node thus costs no periodic
// wakeups, and a busy one no wakeup in the traced tasks' syscalls.
func (t *Tracer) readLoop(rg *ring, poll time.Duration, fn func([]byte)) error {
	rc, err := rg.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("ring buffer fd: %w", err)
	}
	deadline := time.Now().Add(poll)
	got, timedOut := false, false
	for {
		if t.closed.Load() {
			return nil
		}
		drained, err := rg.drain(fn)
		if err != nil {
			return fmt.Errorf("reading ring buffer: %w", err)
		}
		if drained {
			got = true
			if deadline.IsZero() {
				// Woken from parking: events flow again.
				deadline = time.Now().Add(poll)
			}
		}
		if timedOut {
			// The interval that just ended decides: events in it mean more
			// may follow without a wakeup.
			deadline = time.Now().Add(poll)
			if !got {
				// An atomic store is a full barrier: a record reserved
				// before it sees no flag, and the drain below sees it.
				atomic.StoreUint32(rg.parked, 1)
				more, err := rg.drain(fn)
				if err != nil {
					return fmt.Errorf("reading ring buffer: %w", err)
				}
				if more {
					atomic.StoreUint32(rg.parked, 0)
				} else {
					deadline = time.Time{}
				}
			}
			got = false
		}
		if err := rg.f.SetReadDeadline(deadline); err != nil {
			if t.closed.Load() {
				return nil
			}
			return fmt.Errorf("setting ring buffer deadline: %w", err)
		}
		err = rg.wait(rc)
		if t.closed.Load() {
			return nil
		}
		timedOut = errors.Is(err, os.ErrDeadlineExceeded)
		if err != nil && !timedOut {
			return fmt.Errorf("waiting for ring buffer: %w", err)
		}
	}
}
