// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Vigil node agent: TCP connection lifecycle and L7 payload capture from
// tracepoints only (no kprobes/fentry, which many kernels lack).
//
// Design rules:
//  * Never block or fail a syscall: every hook only reads memory and, when the
//    ring buffer is full, counts a drop in `drops` and returns.
//  * Only I/O on IPv4/IPv6 TCP sockets (and connected UDP sockets talking to
//    port 53) is copied to user space; everything else is dropped here.
//  * Socket fds are remembered in `known_socks` (filled at connect/accept and
//    on first sight of a socket fd), so steady-state I/O costs one map lookup.
//  * Where the kernel has the sock_{recv,send}_length tracepoints (6.3+),
//    socket I/O is seen there and the syscall's arguments are read from the
//    task's saved user registers: no hook runs for file, pipe or eventfd
//    I/O, and no syscall entry hook runs at all. Older kernels use entry and
//    exit hooks of the read/write syscalls (see io_enter/io_exit).

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_PAYLOAD 512
// Payload room of the short L7 record (a 256-byte record with the header).
#define SMALL_PAYLOAD 168
#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EINPROGRESS 115
#define SAMPLE_INTERVAL_NS 1000000000ULL
// L7 events and TCP samples do not wake the reader one by one: a wakeup
// costs an IPI (a VM exit under virtualisation) in the traced task's
// syscall and a reader round trip. While events flow, the reader drains on
// its own timer (l7PollInterval, tcpPollInterval in ring.go); the kernel wakes it only for the
// first record after it parked without a deadline (reader_parked, set by
// user space once a whole interval passed without events, so an idle node
// costs nothing) and when pending data crosses the ring's threshold (a
// burst that would otherwise fill the ring before the next drain).
#define L7_WAKEUP_BYTES (1 << 20)
#define TCP_WAKEUP_BYTES (128 << 10)

enum dir { DIR_EGRESS = 0, DIR_INGRESS = 1 };

enum tcp_ev_type {
	TCP_EV_CONNECT = 1,
	TCP_EV_CONNECT_FAILED = 2,
	TCP_EV_ACCEPT = 3,
	TCP_EV_CLOSE = 4,
	TCP_EV_RETRANSMIT = 5,
	TCP_EV_SAMPLE = 6,
	TCP_EV_RESET_SENT = 7,
	TCP_EV_RESET_RECEIVED = 8,
	TCP_EV_EXEC = 9,
	TCP_EV_LISTEN = 10,
	TCP_EV_UNLISTEN = 11,
};

enum drop_idx { DROP_L7 = 0, DROP_TCP = 1, DROP_ARGS = 2, DROP_MAX = 4 };

enum io_kind { IO_BUF = 0, IO_IOVEC = 1, IO_MSG = 2, IO_MMSG = 3 };

// Messages of one sendmmsg/recvmmsg captured with the syscall I/O hooks,
// which see the whole batch at exit (the sock tracepoints see every
// message). glibc's resolver sends its A and AAAA queries in one sendmmsg.
#define MAX_MMSG 4

// x86_64 numbers of the syscalls whose socket I/O is captured.
#define NR_read 0
#define NR_write 1
#define NR_readv 19
#define NR_writev 20
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

// The agent's own PID, set at load time so its exports are not traced back
// into itself.
const volatile u32 self_tgid = 0;

// Ring index in reader_parked.
enum ring_idx { RING_L7 = 0, RING_TCP = 1 };

struct sock_key {
	u32 tgid;
	u32 fd;
};

struct sock_val {
	u64 sk;
	// last_sample_ns is when the connection's RTT and byte counters were
	// last sampled from its I/O (sock_io).
	u64 last_sample_ns;
	u16 family;
	u16 type;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
};

struct sk_owner {
	u32 tgid;
	// closed is set when the socket reaches TCP_CLOSE. The entry is kept
	// (the LRU evicts it) because an abortive close sends its RST after the
	// state change; it is overwritten when the memory is reused for a new
	// socket (connect or accept).
	u32 closed;
	u64 last_sample_ns;
};

struct io_args {
	u64 buf;
	u32 fd;
	u8 kind;
	u8 dir;
	// live is set at syscall entry and cleared at exit: the entry of a
	// thread stays in active_io and is rewritten in place.
	u8 live;
	u8 pad;
};

struct l7_event {
	u64 ts;
	u32 tgid;
	u32 tid;
	u32 fd;
	u32 len;
	s64 ret;
	u8 dir;
	u8 sock_type;
	u16 family;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
	// comm names the process even if it exits before user space reads the
	// event (short-lived clients such as CLIs and cron jobs).
	char comm[16];
	u8 data[MAX_PAYLOAD];
};

struct tcp_event {
	u64 ts;
	u64 sk;
	u64 bytes_sent;
	u64 bytes_received;
	u32 tgid;
	u32 srtt_us;
	u8 type;
	u8 pad;
	u16 family;
	u16 sport;
	u16 dport;
	u8 saddr[16];
	u8 daddr[16];
};

#define L7_HEADER_SIZE __builtin_offsetof(struct l7_event, data)
_Static_assert(L7_HEADER_SIZE + SMALL_PAYLOAD == 256, "short L7 record is 256 bytes");

// Force BTF for the event types so bpf2go can generate Go structs.
const struct l7_event *unused_l7 __attribute__((unused));
const struct tcp_event *unused_tcp __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, struct sock_val);
} known_socks SEC(".maps");

// Socket owner by struct sock address: softirq-context hooks (state changes,
// retransmits) run on whatever task is current, so the owning process is
// remembered here when a syscall makes it known.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct sk_owner);
} sk_owners SEC(".maps");

// Syscall arguments of the read/write in flight, one entry per thread (pid_tgid)
// that did socket I/O. Entries are rewritten in place rather than inserted
// and deleted per syscall (a hash update plus delete costs several times a
// lookup); the LRU forgets threads that are gone.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, u64);
	__type(value, struct io_args);
} active_io SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, u32);
} active_connect SEC(".maps");

// The sendmmsg/recvmmsg in flight on a known socket, one entry per thread
// (pid_tgid), written at syscall entry. The socket layer handles the
// messages one after the other, so next says which one it is at.
struct mmsg_cursor {
	u64 vec;
	u32 vlen;
	u32 next;
	u32 fd;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct mmsg_cursor);
} active_mmsg SEC(".maps");

_Static_assert(sizeof(struct mmsghdr) == 64, "struct mmsghdr is 64 bytes on x86_64");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} l7_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} tcp_events SEC(".maps");

// Per-CPU direct-mapped cache of sockets sampled less than
// SAMPLE_INTERVAL_NS ago (sampled when next_ns is reached). tcp_probe fires
// for every received segment; the cache spares nearly all of them the
// sk_owners hash lookup. Only positive answers are cached, so a socket that
// becomes owned is sampled as soon as before; the ports tell a new
// connection apart from an old one whose struct sock memory it reuses.
#define PROBE_CACHE_SLOTS 1024
struct probe_slot {
	u64 sk;
	u64 next_ns;
	u32 ports;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROBE_CACHE_SLOTS);
	__type(key, u32);
	__type(value, struct probe_slot);
} probe_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

// reader_parked[ring] is set by user space before the ring's reader waits
// without a deadline and cleared by the first record submitted after it.
// User space sets it with a full barrier and then looks at the ring once
// more; a producer reads it after reserving its record (a locked update of
// the producer position): either the producer sees the flag or the reader
// sees the record, so no record waits for a wakeup that never comes.
// Memory-mapped so that user space needs no syscall to set it.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u32);
} reader_parked SEC(".maps");

static __always_inline void count_drop(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&drops, &idx);
	if (v)
		*v += 1;
}

// batch_flags returns the submit flags of a batched (not individually
// waking) record of at most max_size bytes, reserved in ring rb.
static __always_inline u64 batch_flags(void *rb, u32 ring, u64 threshold, u64 max_size)
{
	u32 *parked = bpf_map_lookup_elem(&reader_parked, &ring);
	if (parked && *parked) {
		// Racing CPUs may both wake the reader: one spurious wakeup.
		*parked = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	// Only the record that crosses the threshold wakes the reader: while it
	// drains a backlog, more wakeups would be wasted IPIs.
	u64 pending = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);
	if (pending >= threshold && pending < threshold + 2 * max_size)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void sk_addrs(struct sock *sk, u16 *family, u16 *sport, u16 *dport,
				     u8 *saddr, u8 *daddr)
{
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	// BPF_CORE_READ_INTO copies sizeof(*dst) bytes: cast to the field type.
	if (*family == AF_INET) {
		BPF_CORE_READ_INTO((__be32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__be32 *)daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
	}
}

// fd_socket returns the struct socket behind fd of the current task, or NULL
// when fd is not a socket.
static __always_inline struct socket *fd_socket(u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	return (struct socket *)BPF_CORE_READ(f, private_data);
}

// remember_sock fills v from sk (the socket behind fd of process tgid) and
// records it in known_socks if it is an interesting one; it returns the
// stored value (or NULL). dest is the user address a sendto names (0 if
// none): an unconnected UDP socket sending to port 53 is a DNS client too
// (musl's resolver, used in Alpine images, never connects), and its peer
// is the last server it sent to.
static __always_inline struct sock_val *remember_sock(u32 tgid, u32 fd, struct sock *sk, u16 type, u64 dest)
{
	struct sock_val v = {};
	v.sk = (u64)sk;
	v.type = type;
	sk_addrs(sk, &v.family, &v.sport, &v.dport, v.saddr, v.daddr);
	if (v.family != AF_INET && v.family != AF_INET6)
		return NULL;
	if (v.type == 2 /* SOCK_DGRAM */ && v.dport == 0 && dest) {
		struct sockaddr_in6 sa = {};
		if (bpf_probe_read_user(&sa, sizeof(sa), (void *)dest))
			return NULL;
		v.dport = bpf_ntohs(sa.sin6_port);
		if (sa.sin6_family == AF_INET)
			__builtin_memcpy(v.daddr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
		else if (sa.sin6_family == AF_INET6)
			__builtin_memcpy(v.daddr, &sa.sin6_addr, 16);
		else
			return NULL;
	}
	// UDP is only interesting for DNS; everything else (QUIC, statsd, ...)
	// would flood the ring buffer.
	if (v.type == 2 /* SOCK_DGRAM */ && v.dport != 53)
		return NULL;
	if (v.type != 1 /* SOCK_STREAM */ && v.type != 2)
		return NULL;
	struct sock_key k = { .tgid = tgid, .fd = fd };
	bpf_map_update_elem(&known_socks, &k, &v, BPF_ANY);
	return bpf_map_lookup_elem(&known_socks, &k);
}

// track_fd records fd as a known socket if it is an interesting one and
// returns the stored value (or NULL); dest as in remember_sock.
static __always_inline struct sock_val *track_fd(u32 tgid, u32 fd, u64 dest)
{
	struct socket *sock = fd_socket(fd);
	if (!sock)
		return NULL;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	return remember_sock(tgid, fd, sk, BPF_CORE_READ(sock, type), dest);
}

static __always_inline struct sock_val *lookup_fd(u32 tgid, u32 fd, u64 dest)
{
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_val *v = bpf_map_lookup_elem(&known_socks, &k);
	// A sendto on a UDP socket may name another server than the last one.
	if (v && !(dest && v->type == 2))
		return v;
	return track_fd(tgid, fd, dest);
}

static __always_inline void emit_tcp(u8 type, struct sock *sk, u32 tgid, u32 srtt_us)
{
	struct tcp_event *e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_TCP);
		return;
	}
	e->ts = bpf_ktime_get_ns();
	e->sk = (u64)sk;
	e->tgid = tgid;
	e->type = type;
	e->srtt_us = srtt_us;
	e->pad = 0;
	sk_addrs(sk, &e->family, &e->sport, &e->dport, e->saddr, e->daddr);
	e->bytes_sent = 0;
	e->bytes_received = 0;
	if (type == TCP_EV_CLOSE || type == TCP_EV_SAMPLE) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		e->bytes_sent = BPF_CORE_READ(tp, bytes_acked);
		e->bytes_received = BPF_CORE_READ(tp, bytes_received);
	}
	// Connection events feed counters and gauges, for which the batching
	// delay (<= tcpPollInterval) does not matter; with short-lived connections a
	// wakeup per accept and close would cost more than the rest.
	bpf_ringbuf_submit(e, batch_flags(&tcp_events, RING_TCP, TCP_WAKEUP_BYTES, sizeof(*e)));
}

// ---- L7: read/write syscall family -------------------------------------

// fill_l7 completes an event reserved with room for max payload bytes.
static __always_inline void fill_l7(struct l7_event *e, u32 max, u64 now, u64 id, u32 fd, u8 dir,
				    long ret, struct sock_val *sv, u64 src, u64 avail)
{
	e->ts = now;
	e->tgid = id >> 32;
	e->tid = (u32)id;
	e->fd = fd;
	e->ret = ret;
	e->dir = dir;
	e->sock_type = sv->type;
	e->family = sv->family;
	e->sport = sv->sport;
	e->dport = sv->dport;
	__builtin_memcpy(e->saddr, sv->saddr, 16);
	__builtin_memcpy(e->daddr, sv->daddr, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	u32 n = avail > max ? max : (u32)avail;
	e->len = n;
	if (bpf_probe_read_user(e->data, n, (void *)src))
		e->len = 0;
}

// emit_io sends the first bytes of ret bytes that a read/write-family
// syscall of kind moved through buf on the known socket sv.
static __always_inline int emit_io(u64 now, u64 id, u32 fd, u64 buf, u8 kind, u8 dir, long ret, struct sock_val *sv)
{
	u64 src = buf;
	u64 avail = ret;
	if (kind == IO_MSG) {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)src))
			return 0;
		src = (u64)msg.msg_iov;
		kind = IO_IOVEC;
	}
	if (kind == IO_IOVEC) {
		// Only the first iovec is captured: protocol headers live there.
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)src))
			return 0;
		src = (u64)iov.iov_base;
		if (iov.iov_len < avail)
			avail = iov.iov_len;
	}

	// Most messages (requests, small responses, DB commands) fit a short
	// record: the ring holds more of them and the reader copies less.
	struct l7_event *e;
	if (avail <= SMALL_PAYLOAD) {
		e = bpf_ringbuf_reserve(&l7_events, L7_HEADER_SIZE + SMALL_PAYLOAD, 0);
		if (!e) {
			count_drop(DROP_L7);
			return 0;
		}
		fill_l7(e, SMALL_PAYLOAD, now, id, fd, dir, ret, sv, src, avail);
	} else {
		e = bpf_ringbuf_reserve(&l7_events, sizeof(*e), 0);
		if (!e) {
			count_drop(DROP_L7);
			return 0;
		}
		fill_l7(e, MAX_PAYLOAD, now, id, fd, dir, ret, sv, src, avail);
	}
	bpf_ringbuf_submit(e, batch_flags(&l7_events, RING_L7, L7_WAKEUP_BYTES, sizeof(*e)));
	return 0;
}

// ---- socket I/O from the sock layer (kernels 6.3+) ----------------------

// sock_io handles one sock_{recv,send}_length event: the socket layer
// finished moving ret bytes for the syscall the current task is in. The
// syscall and its arguments come from the task's saved user registers;
// anything that is not one of the captured syscalls (sendfile, splice,
// io_uring, sendmmsg, in-kernel senders) is skipped.
static __always_inline int sock_io(void *skp, u16 family, u16 protocol, int ret, u8 dir)
{
	if (ret <= 0)
		return 0;
	// Filters on the tracepoint's own fields first: AF_UNIX and AF_NETLINK
	// I/O, plentiful on any node, costs nothing more.
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (protocol != IPPROTO_TCP_ && protocol != IPPROTO_UDP_)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long nr = BPF_CORE_READ(regs, orig_ax);
	u8 kind, want;
	switch (nr) {
	case NR_read:
	case NR_recvfrom:
		kind = IO_BUF, want = DIR_INGRESS;
		break;
	case NR_write:
	case NR_sendto:
		kind = IO_BUF, want = DIR_EGRESS;
		break;
	case NR_readv:
		kind = IO_IOVEC, want = DIR_INGRESS;
		break;
	case NR_writev:
		kind = IO_IOVEC, want = DIR_EGRESS;
		break;
	case NR_recvmsg:
		kind = IO_MSG, want = DIR_INGRESS;
		break;
	case NR_sendmsg:
		kind = IO_MSG, want = DIR_EGRESS;
		break;
	case NR_recvmmsg:
		kind = IO_MMSG, want = DIR_INGRESS;
		break;
	case NR_sendmmsg:
		kind = IO_MMSG, want = DIR_EGRESS;
		break;
	default:
		return 0;
	}
	// Data moving the other way than the syscall's (a send the kernel makes
	// while the task reads) is not in the syscall's buffer.
	if (want != dir)
		return 0;
	u32 fd = BPF_CORE_READ(regs, di);
	u64 buf = BPF_CORE_READ(regs, si);
	struct sock *sk = skp;
	struct sock_key k = { .tgid = tgid, .fd = fd };
	struct sock_val *sv = bpf_map_lookup_elem(&known_socks, &k);
	u64 dest = nr == NR_sendto ? BPF_CORE_READ(regs, r8) : 0;
	// A different socket behind a remembered fd means the fd was closed
	// and reused; a sendto on a UDP socket may name another server.
	if (!sv || sv->sk != (u64)sk || (dest && sv->type == 2))
		sv = remember_sock(tgid, fd, sk, BPF_CORE_READ(sk, sk_type), dest);
	if (!sv)
		return 0;
	if (kind == IO_MMSG) {
		struct mmsg_cursor *c = bpf_map_lookup_elem(&active_mmsg, &id);
		if (!c || c->vec != buf || c->next >= c->vlen)
			return 0;
		buf += (u64)c->next * sizeof(struct mmsghdr);
		c->next++;
		kind = IO_MSG;
	}
	u64 now = bpf_ktime_get_ns();
	if (sv->type == 1 /* SOCK_STREAM */ && now - sv->last_sample_ns >= SAMPLE_INTERVAL_NS) {
		// RTT and byte counters of live connections, at most once per
		// second each, sampled here instead of in tcp_probe, which runs
		// for every TCP segment the node receives.
		sv->last_sample_ns = now;
		struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sv->sk);
		if (o && !o->closed)
			emit_tcp(TCP_EV_SAMPLE, sk, o->tgid, BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3);
	}
	return emit_io(now, id, fd, buf, kind, dir, ret, sv);
}

SEC("tracepoint/sock/sock_recv_length")
int sock_recv_length(struct trace_event_raw_sock_msg_length *ctx)
{
	return sock_io(ctx->sk, ctx->family, ctx->protocol, ctx->ret, DIR_INGRESS);
}

SEC("tracepoint/sock/sock_send_length")
int sock_send_length(struct trace_event_raw_sock_msg_length *ctx)
{
	return sock_io(ctx->sk, ctx->family, ctx->protocol, ctx->ret, DIR_EGRESS);
}

// ---- socket I/O from syscall entry and exit (kernels before 6.3) ---------

static __always_inline int io_enter(u64 fd, u64 buf, u8 kind, u8 dir, u64 dest)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (tgid == self_tgid)
		return 0;
	if (!lookup_fd(tgid, (u32)fd, dest))
		return 0;
	struct io_args *a = bpf_map_lookup_elem(&active_io, &id);
	if (a) {
		a->buf = buf;
		a->fd = (u32)fd;
		a->kind = kind;
		a->dir = dir;
		a->live = 1;
		return 0;
	}
	struct io_args n = { .buf = buf, .fd = (u32)fd, .kind = kind, .dir = dir, .live = 1 };
	if (bpf_map_update_elem(&active_io, &id, &n, BPF_ANY))
		count_drop(DROP_ARGS);
	return 0;
}

static __always_inline int io_exit(long ret, u8 kind, u8 dir)
{
	u64 id = bpf_get_current_pid_tgid();
	struct io_args *a = bpf_map_lookup_elem(&active_io, &id);
	if (!a || !a->live)
		return 0;
	struct io_args args = *a;
	a->live = 0;
	// A mismatch is an entry left live by a thread that died inside a
	// syscall, found again by a thread that reuses its id.
	if (ret <= 0 || args.kind != kind || args.dir != dir)
		return 0;
	struct sock_key k = { .tgid = id >> 32, .fd = args.fd };
	struct sock_val *sv = bpf_map_lookup_elem(&known_socks, &k);
	if (!sv)
		return 0;
	return emit_io(bpf_ktime_get_ns(), id, args.fd, args.buf, args.kind, args.dir, ret, sv);
}

// dest is the argument that holds a destination address (sendto's), or
// none.
#define IO_HOOKS(name, kind, dir, dest)                                         \
	SEC("tracepoint/syscalls/sys_enter_" #name)                             \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)                  \
	{                                                                       \
		return io_enter(ctx->args[0], ctx->args[1], kind, dir, dest);   \
	}                                                                       \
	SEC("tracepoint/syscalls/sys_exit_" #name)                              \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)                    \
	{                                                                       \
		return io_exit(ctx->ret, kind, dir);                            \
	}

IO_HOOKS(read, IO_BUF, DIR_INGRESS, 0)
IO_HOOKS(write, IO_BUF, DIR_EGRESS, 0)
IO_HOOKS(readv, IO_IOVEC, DIR_INGRESS, 0)
IO_HOOKS(writev, IO_IOVEC, DIR_EGRESS, 0)
IO_HOOKS(recvfrom, IO_BUF, DIR_INGRESS, 0)
IO_HOOKS(sendto, IO_BUF, DIR_EGRESS, ctx->args[4])
IO_HOOKS(recvmsg, IO_MSG, DIR_INGRESS, 0)
IO_HOOKS(sendmsg, IO_MSG, DIR_EGRESS, 0)

// ---- sendmmsg / recvmmsg -------------------------------------------------

static __always_inline int mmsg_enter(u64 fd, u64 vec, u64 vlen)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (tgid == self_tgid || !lookup_fd(tgid, (u32)fd, 0))
		return 0;
	struct mmsg_cursor c = { .vec = vec, .vlen = (u32)vlen, .fd = (u32)fd };
	if (bpf_map_update_elem(&active_mmsg, &id, &c, BPF_ANY))
		count_drop(DROP_ARGS);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return mmsg_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return mmsg_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

// mmsg_exit emits the first MAX_MMSG of the ret messages a sendmmsg or
// recvmmsg moved (syscall I/O hooks only); each one's size is the msg_len
// the kernel wrote back.
static __always_inline int mmsg_exit(long ret, u8 dir)
{
	u64 id = bpf_get_current_pid_tgid();
	struct mmsg_cursor *cp = bpf_map_lookup_elem(&active_mmsg, &id);
	if (!cp)
		return 0;
	struct mmsg_cursor c = *cp;
	bpf_map_delete_elem(&active_mmsg, &id);
	if (ret <= 0)
		return 0;
	struct sock_key k = { .tgid = id >> 32, .fd = c.fd };
	struct sock_val *sv = bpf_map_lookup_elem(&known_socks, &k);
	if (!sv)
		return 0;
	u64 now = bpf_ktime_get_ns();
	for (u32 i = 0; i < MAX_MMSG && i < (u64)ret; i++) {
		struct mmsghdr *m = (struct mmsghdr *)(c.vec + (u64)i * sizeof(struct mmsghdr));
		u32 len = 0;
		if (bpf_probe_read_user(&len, sizeof(len), &m->msg_len) || len == 0)
			continue;
		emit_io(now, id, c.fd, (u64)m, IO_MSG, dir, len, sv);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_exit(ctx->ret, DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_exit(ctx->ret, DIR_INGRESS);
}

// ---- connect / accept / close --------------------------------------------

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if ((u32)(id >> 32) == self_tgid)
		return 0;
	u32 fd = ctx->args[0];
	if (bpf_map_update_elem(&active_connect, &id, &fd, BPF_ANY))
		count_drop(DROP_ARGS);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 *fdp = bpf_map_lookup_elem(&active_connect, &id);
	if (!fdp)
		return 0;
	u32 fd = *fdp;
	bpf_map_delete_elem(&active_connect, &id);
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	// Re-read the socket: connect() just set the peer address, and the fd
	// may have been tracked before with an unconnected (zero) peer.
	track_fd(id >> 32, fd, 0);
	return 0;
}


static __always_inline int accept_exit(long ret)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if (ret < 0 || tgid == self_tgid)
		return 0;
	struct sock_val *v = track_fd(tgid, (u32)ret, 0);
	if (!v || v->type != 1)
		return 0;
	u64 sk = v->sk;
	struct sk_owner o = { .tgid = tgid };
	bpf_map_update_elem(&sk_owners, &sk, &o, BPF_ANY);
	emit_tcp(TCP_EV_ACCEPT, (struct sock *)sk, tgid, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	struct sock_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = ctx->args[0] };
	bpf_map_delete_elem(&known_socks, &k);
	return 0;
}

// ---- TCP lifecycle -------------------------------------------------------

SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	u64 sk = (u64)ctx->skaddr;
	int os = ctx->oldstate, ns = ctx->newstate;

	if (ns == TCP_SYN_SENT || ns == TCP_LISTEN) {
		// connect() and listen() run this in the caller's context:
		// remember the owner.
		u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (tgid == self_tgid)
			return 0;
		struct sk_owner o = { .tgid = tgid };
		bpf_map_update_elem(&sk_owners, &sk, &o, BPF_ANY);
		// A listener names its service before it accepts anything, and
		// tells user space which processes' network namespaces to watch
		// for listen-queue drops.
		if (ns == TCP_LISTEN)
			emit_tcp(TCP_EV_LISTEN, (struct sock *)sk, tgid, 0);
		return 0;
	}
	struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sk);
	if (!o || o->closed)
		return 0;
	u32 tgid = o->tgid;
	if (os == TCP_LISTEN) {
		emit_tcp(TCP_EV_UNLISTEN, (struct sock *)sk, tgid, 0);
		o->closed = 1;
		return 0;
	}
	if (os == TCP_SYN_SENT && ns == TCP_ESTABLISHED) {
		emit_tcp(TCP_EV_CONNECT, (struct sock *)sk, tgid, 0);
		return 0;
	}
	if (ns == TCP_CLOSE) {
		emit_tcp(os == TCP_SYN_SENT ? TCP_EV_CONNECT_FAILED : TCP_EV_CLOSE, (struct sock *)sk, tgid, 0);
		o->closed = 1;
	}
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit_skb(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	u64 sk = (u64)ctx->skaddr;
	struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sk);
	if (!o || o->closed)
		return 0;
	emit_tcp(TCP_EV_RETRANSMIT, (struct sock *)sk, o->tgid, 0);
	return 0;
}

// tcp_probe fires for every segment received on an established socket; it is
// sampled once per second per socket to report smoothed RTT and byte counters
// of long-lived connections. Only attached with the syscall I/O hooks: where
// sock_{recv,send}_length are used, sock_io samples the connections instead.
SEC("tracepoint/tcp/tcp_probe")
int tcp_probe(struct trace_event_raw_tcp_probe *ctx)
{
	u64 sk = (u64)ctx->skaddr;
	u64 now = bpf_ktime_get_ns();
	u32 ports = ((u32)ctx->sport << 16) | ctx->dport;
	u32 slot = (u32)(sk >> 6) & (PROBE_CACHE_SLOTS - 1);
	struct probe_slot *ps = bpf_map_lookup_elem(&probe_cache, &slot);
	if (ps && ps->sk == sk && ps->ports == ports && now < ps->next_ns)
		return 0;
	struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sk);
	if (!o || o->closed)
		return 0;
	if (o->last_sample_ns && now - o->last_sample_ns < SAMPLE_INTERVAL_NS) {
		if (ps) {
			ps->sk = sk;
			ps->ports = ports;
			ps->next_ns = o->last_sample_ns + SAMPLE_INTERVAL_NS;
		}
		return 0;
	}
	o->last_sample_ns = now;
	if (ps) {
		ps->sk = sk;
		ps->ports = ports;
		ps->next_ns = now + SAMPLE_INTERVAL_NS;
	}
	emit_tcp(TCP_EV_SAMPLE, (struct sock *)sk, o->tgid, ctx->srtt);
	return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int tcp_send_reset(struct trace_event_raw_tcp_send_reset *ctx)
{
	u64 sk = (u64)ctx->skaddr;
	if (!sk)
		return 0;
	struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sk);
	if (!o)
		return 0;
	emit_tcp(TCP_EV_RESET_SENT, (struct sock *)sk, o->tgid, 0);
	return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	u64 sk = (u64)ctx->skaddr;
	struct sk_owner *o = bpf_map_lookup_elem(&sk_owners, &sk);
	if (!o || o->closed)
		return 0;
	emit_tcp(TCP_EV_RESET_RECEIVED, (struct sock *)sk, o->tgid, 0);
	return 0;
}

// ---- processes -----------------------------------------------------------

// A new program image: user space names the process right away (from
// /proc/<pid>/environ and cgroup) while it is surely alive, instead of at
// its first observed request, by which time a short-lived client may have
// exited. Sent on the TCP ring, waking the reader at once.
SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tcp_event *e = bpf_ringbuf_reserve(&tcp_events, sizeof(*e), 0);
	if (!e) {
		count_drop(DROP_TCP);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->tgid = tgid;
	e->type = TCP_EV_EXEC;
	// Forced: the default wakes the reader only if it had read everything
	// before this record, and batched TCP records may be pending.
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}
