package ebpf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unsafe"
)

// Direction of an L7 payload relative to the traced process.
type Direction uint8

const (
	// Egress is data the process wrote (write, sendto, ...).
	Egress Direction = 0
	// Ingress is data the process read (read, recvfrom, ...).
	Ingress Direction = 1
)

// Socket types as in <linux/net.h>.
const (
	SockStream = 1
	SockDgram  = 2
)

// L7Event is the first bytes of one successful read/write-family syscall on
// a tracked socket.
type L7Event struct {
	// Timestamp is CLOCK_MONOTONIC nanoseconds at syscall exit.
	Timestamp uint64
	PID, TID  uint32
	FD        uint32
	Dir       Direction
	SockType  uint8
	// Size is the syscall's return value: bytes actually transferred, which
	// may exceed len(Data).
	Size          int64
	Local, Remote netip.AddrPort
	// Comm is the thread's command name at the time of the syscall.
	Comm string
	// Data aliases an internal buffer: it is valid only during the handler
	// call.
	Data []byte
}

// TCPEventType says what happened to a TCP connection.
type TCPEventType uint8

// Values match enum tcp_ev_type in agent.bpf.c.
const (
	TCPConnect       TCPEventType = 1
	TCPConnectFailed TCPEventType = 2
	TCPAccept        TCPEventType = 3
	TCPClose         TCPEventType = 4
	TCPRetransmit    TCPEventType = 5
	TCPSample        TCPEventType = 6
	TCPResetSent     TCPEventType = 7
	TCPResetReceived TCPEventType = 8
	// ProcessExec reports a new program image in PID (no socket fields).
	ProcessExec TCPEventType = 9
	// TCPListen reports a socket of PID starting to listen on Local;
	// TCPUnlisten, that it stopped.
	TCPListen   TCPEventType = 10
	TCPUnlisten TCPEventType = 11
)

func (t TCPEventType) String() string {
	switch t {
	case TCPConnect:
		return "connect"
	case TCPConnectFailed:
		return "connect_failed"
	case TCPAccept:
		return "accept"
	case TCPClose:
		return "close"
	case TCPRetransmit:
		return "retransmit"
	case TCPSample:
		return "sample"
	case TCPResetSent:
		return "reset_sent"
	case TCPResetReceived:
		return "reset_received"
	case ProcessExec:
		return "exec"
	case TCPListen:
		return "listen"
	case TCPUnlisten:
		return "unlisten"
	}
	return fmt.Sprintf("tcp_event(%d)", uint8(t))
}

// TCPEvent is a TCP lifecycle event. PID is the owning process as far as the
// kernel side knows it (0 when unknown).
type TCPEvent struct {
	Type      TCPEventType
	Timestamp uint64
	// Sock identifies the connection (kernel struct sock address) for its
	// lifetime.
	Sock          uint64
	PID           uint32
	Local, Remote netip.AddrPort
	// BytesSent/BytesReceived are cumulative for the connection (set on
	// TCPClose and TCPSample).
	BytesSent, BytesReceived uint64
	// SRTT is the smoothed RTT (TCPSample only).
	SRTT time.Duration
}

var (
	l7HeaderSize = int(unsafe.Offsetof(agentL7Event{}.Data))
	tcpEventSize = int(unsafe.Sizeof(agentTcpEvent{}))
)

const (
	afInet  = 2
	afInet6 = 10
)

func addrPort(family uint16, addr []byte, port uint16) netip.AddrPort {
	var a netip.Addr
	if family == afInet {
		a = netip.AddrFrom4([4]byte(addr[:4]))
	} else {
		a = netip.AddrFrom16([16]byte(addr[:16])).Unmap()
	}
	return netip.AddrPortFrom(a, port)
}

// decode parses a struct l7_event; offsets follow the generated agentL7Event.
func (e *L7Event) decode(b []byte) error {
	if len(b) < l7HeaderSize {
		return fmt.Errorf("short l7 event: %d bytes", len(b))
	}
	le := binary.LittleEndian
	e.Timestamp = le.Uint64(b[0:])
	e.PID = le.Uint32(b[8:])
	e.TID = le.Uint32(b[12:])
	e.FD = le.Uint32(b[16:])
	n := int(le.Uint32(b[20:]))
	e.Size = int64(le.Uint64(b[24:]))
	e.Dir = Direction(b[32])
	e.SockType = b[33]
	family := le.Uint16(b[34:])
	e.Local = addrPort(family, b[40:56], le.Uint16(b[36:]))
	e.Remote = addrPort(family, b[56:72], le.Uint16(b[38:]))
	comm := b[72:88]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	if string(comm) != e.Comm {
		e.Comm = string(comm)
	}
	if n > len(b)-l7HeaderSize {
		n = len(b) - l7HeaderSize
	}
	e.Data = b[l7HeaderSize : l7HeaderSize+n]
	return nil
}

// decode parses a struct tcp_event; offsets follow the generated agentTcpEvent.
func (e *TCPEvent) decode(b []byte) error {
	if len(b) < tcpEventSize {
		return fmt.Errorf("short tcp event: %d bytes", len(b))
	}
	le := binary.LittleEndian
	e.Timestamp = le.Uint64(b[0:])
	e.Sock = le.Uint64(b[8:])
	e.BytesSent = le.Uint64(b[16:])
	e.BytesReceived = le.Uint64(b[24:])
	e.PID = le.Uint32(b[32:])
	e.SRTT = time.Duration(le.Uint32(b[36:])) * time.Microsecond
	e.Type = TCPEventType(b[40])
	family := le.Uint16(b[42:])
	e.Local = addrPort(family, b[48:64], le.Uint16(b[44:]))
	e.Remote = addrPort(family, b[64:80], le.Uint16(b[46:]))
	return nil
}
