package ebpf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Handler receives decoded events. Calls for one kind of event come from a
// single goroutine; L7 and TCP events arrive on two different goroutines.
type Handler interface {
	HandleL7(*L7Event)
	HandleTCP(*TCPEvent)
}

// Config configures the tracer.
type Config struct {
	Logger *slog.Logger
	// Registerer receives vigil_agent_hook_attached and the tracer's map and
	// drop metrics. May be nil.
	Registerer prometheus.Registerer
	// SelfPID is excluded from tracing so the agent's own exports do not
	// feed back into it. Defaults to os.Getpid().
	SelfPID int
	// TracefsPath is where tracefs is mounted if it is not already (the
	// tracepoint IDs are read from it).
	TracefsPath string
	// IOHooks selects how socket reads and writes are seen: IOHooksAuto
	// (the default) uses the sock_{recv,send}_length tracepoints where the
	// kernel has them and the read/write syscalls' entry and exit
	// tracepoints elsewhere; IOHooksSyscalls always uses the latter.
	IOHooks string

	// hookOverride redirects programs to other tracepoints; tests use it to
	// make a hook fail the way a missing tracepoint does on other kernels.
	hookOverride map[string]string
}

// Values of Config.IOHooks.
const (
	IOHooksAuto     = "auto"
	IOHooksSyscalls = "syscalls"
)

// HookStatus is the attach outcome of one program.
type HookStatus struct {
	Hook string // e.g. "syscalls/sys_enter_read"
	Err  error  // nil when attached
}

// Tracer owns the loaded programs, their links and the ring buffer readers.
type Tracer struct {
	logger *slog.Logger
	maps   *ebpf.Collection
	progs  []*ebpf.Program
	links  []link.Link
	hooks  []HookStatus
	l7     *ring
	tcp    *ring
	// parked maps the reader_parked array the rings' flags live in.
	parked []byte

	// mu orders Run's start of the readers against Close; readers counts
	// the running ones, which Close waits for before unmapping the rings.
	mu        sync.Mutex
	readers   sync.WaitGroup
	closed    atomic.Bool
	closeOnce sync.Once
}

// Load loads every program and attaches each one individually. A program
// that fails to load or attach is logged, reported in Hooks() and in
// vigil_agent_hook_attached{hook} = 0, and the rest keep running. Load only
// fails when nothing useful can run (maps cannot be created or no hook
// attached).
func Load(cfg Config) (*Tracer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SelfPID == 0 {
		cfg.SelfPID = os.Getpid()
	}
	if cfg.TracefsPath == "" {
		cfg.TracefsPath = "/sys/kernel/tracing"
	}
	switch cfg.IOHooks {
	case "", IOHooksAuto, IOHooksSyscalls:
	default:
		return nil, fmt.Errorf("unknown I/O hook mode %q (want %q or %q)", cfg.IOHooks, IOHooksAuto, IOHooksSyscalls)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("removing memlock rlimit: %w", err)
	}
	ensureTracefs(cfg.TracefsPath, cfg.Logger)

	spec, err := loadAgent()
	if err != nil {
		return nil, fmt.Errorf("loading BPF spec: %w", err)
	}
	if err := spec.Variables["self_tgid"].Set(uint32(cfg.SelfPID)); err != nil {
		return nil, fmt.Errorf("setting self_tgid: %w", err)
	}

	// Maps first, shared by every program, so that a program the verifier
	// rejects does not take the others down with it.
	mapSpec := spec.Copy()
	mapSpec.Programs = nil
	maps, err := ebpf.NewCollection(mapSpec)
	if err != nil {
		return nil, fmt.Errorf("creating BPF maps: %w", err)
	}
	t := &Tracer{logger: cfg.Logger, maps: maps}

	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	attached := 0
	attach := func(name string) error {
		hook := strings.TrimPrefix(spec.Programs[name].SectionName, "tracepoint/")
		if o, ok := cfg.hookOverride[name]; ok {
			hook = o
		}
		err := t.loadAndAttach(spec, name, hook)
		t.hooks = append(t.hooks, HookStatus{Hook: hook, Err: err})
		if err != nil {
			cfg.Logger.Warn("eBPF hook not attached; continuing without it", "hook", hook, "program", name, "err", err)
			return err
		}
		attached++
		return nil
	}
	// Socket reads and writes are seen by sock_{recv,send}_length where the
	// kernel has them (6.3+): they fire only for socket I/O, and the
	// syscall's arguments are read from its saved registers. Elsewhere the
	// entry and exit tracepoints of the read/write syscalls, which fire for
	// every file and pipe too, see them, and tcp_probe samples RTT. Never
	// both: every event would count twice.
	sockLength := cfg.IOHooks != IOHooksSyscalls
	if sockLength {
		firstLink, firstHook, attachedBefore := len(t.links), len(t.hooks), attached
		for _, name := range sockLengthPrograms {
			if attach(name) != nil {
				sockLength = false
			}
		}
		if !sockLength {
			// Half a pair would see only one direction: detach what did attach.
			for _, l := range t.links[firstLink:] {
				_ = l.Close()
			}
			t.links = t.links[:firstLink]
			for i := firstHook; i < len(t.hooks); i++ {
				if t.hooks[i].Err == nil {
					t.hooks[i].Err = errUnusedSockLength
				}
			}
			attached = attachedBefore
			cfg.Logger.Info("sock_{recv,send}_length tracepoints unavailable; using the read/write syscall tracepoints")
		}
	}
	for _, name := range names {
		if slices.Contains(sockLengthPrograms, name) || (sockLength && slices.Contains(fallbackPrograms, name)) {
			continue
		}
		_ = attach(name) // failures are logged and reported per hook
	}
	if attached == 0 {
		t.Close()
		return nil, errors.New("no eBPF hook could be attached")
	}
	// reader_parked is an array of u32 that the kernel lays out 8 bytes
	// apart in its memory-mapped form; index RING_L7 = 0, RING_TCP = 1.
	if t.parked, err = unix.Mmap(maps.Maps["reader_parked"].FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		t.Close()
		return nil, fmt.Errorf("mapping reader_parked: %w", err)
	}
	if t.l7, err = newRing(maps.Maps["l7_events"], (*uint32)(unsafe.Pointer(&t.parked[0]))); err != nil {
		t.Close()
		return nil, fmt.Errorf("opening l7 ring buffer: %w", err)
	}
	if t.tcp, err = newRing(maps.Maps["tcp_events"], (*uint32)(unsafe.Pointer(&t.parked[8]))); err != nil {
		t.Close()
		return nil, fmt.Errorf("opening tcp ring buffer: %w", err)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(newCollector(t)); err != nil {
			t.Close()
			return nil, fmt.Errorf("registering tracer metrics: %w", err)
		}
	}
	cfg.Logger.Info("eBPF tracer loaded", "hooks_attached", attached, "hooks_total", len(names))
	return t, nil
}

// sockLengthPrograms see socket I/O on kernels that have them;
// fallbackPrograms do their work elsewhere (see Load): the read/write
// syscall tracepoints, and tcp_probe, which samples RTT on every received
// segment where sock_io samples it on the connection's I/O.
var (
	sockLengthPrograms = []string{"sock_recv_length", "sock_send_length"}
	fallbackPrograms   = []string{
		"enter_read", "exit_read", "enter_write", "exit_write", "enter_readv", "exit_readv",
		"enter_writev", "exit_writev", "enter_recvfrom", "exit_recvfrom", "enter_sendto", "exit_sendto",
		"enter_recvmsg", "exit_recvmsg", "enter_sendmsg", "exit_sendmsg", "exit_recvmmsg", "exit_sendmmsg",
		"tcp_probe",
	}
	errUnusedSockLength = errors.New("not used: its counterpart did not attach, the read/write syscall tracepoints are used instead")
)

func (t *Tracer) loadAndAttach(spec *ebpf.CollectionSpec, name, hook string) error {
	group, event, ok := strings.Cut(hook, "/")
	if !ok {
		return fmt.Errorf("unexpected section %q", hook)
	}
	one := spec.Copy()
	one.Programs = map[string]*ebpf.ProgramSpec{name: spec.Programs[name]}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: t.maps.Maps})
	if err != nil {
		return fmt.Errorf("loading program %s: %w", name, err)
	}
	prog := coll.DetachProgram(name)
	coll.Close()
	l, err := link.Tracepoint(group, event, prog, nil)
	if err != nil {
		prog.Close()
		return fmt.Errorf("attaching tracepoint %s: %w", hook, err)
	}
	t.progs = append(t.progs, prog)
	t.links = append(t.links, l)
	return nil
}

// ensureTracefs mounts tracefs when it is missing: cilium/ebpf reads
// tracepoint IDs from it, and minimal hosts/containers often lack the mount.
func ensureTracefs(path string, logger *slog.Logger) {
	if _, err := os.Stat(path + "/events"); err == nil {
		return
	}
	if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err == nil {
		return
	}
	if err := unix.Mount("tracefs", path, "tracefs", 0, ""); err != nil {
		logger.Warn("tracefs is not mounted and mounting it failed; tracepoints will not attach", "path", path, "err", err)
	}
}

// Hooks reports the attach outcome of every program.
func (t *Tracer) Hooks() []HookStatus {
	return append([]HookStatus(nil), t.hooks...)
}

// Run reads both ring buffers and calls h until ctx is done or the tracer is
// closed.
func (t *Tracer) Run(ctx context.Context, h Handler) error {
	// Close unmaps the rings: it must wait for the readers, which must not
	// start once it has.
	t.mu.Lock()
	if t.closed.Load() {
		t.mu.Unlock()
		return nil
	}
	t.readers.Add(2)
	t.mu.Unlock()
	go func() {
		<-ctx.Done()
		t.Close()
	}()
	errs := make(chan error, 2)
	go func() {
		defer t.readers.Done()
		var ev L7Event
		errs <- t.readLoop(t.l7, l7PollInterval, func(b []byte) {
			if err := ev.decode(b); err == nil {
				h.HandleL7(&ev)
			}
		})
	}()
	go func() {
		defer t.readers.Done()
		var ev TCPEvent
		errs <- t.readLoop(t.tcp, tcpPollInterval, func(b []byte) {
			if err := ev.decode(b); err == nil {
				h.HandleTCP(&ev)
			}
		})
	}()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
			first = err
		}
	}
	return first
}

// Drops returns the in-kernel drop counters summed over CPUs, by reason.
func (t *Tracer) Drops() (map[string]uint64, error) {
	m := t.maps.Maps["drops"]
	out := map[string]uint64{}
	for idx, reason := range dropReasons {
		var perCPU []uint64
		if err := m.Lookup(uint32(idx), &perCPU); err != nil {
			return nil, fmt.Errorf("reading drop counter %s: %w", reason, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[reason] = sum
	}
	return out, nil
}

// dropReasons is indexed like enum drop_idx in agent.bpf.c.
var dropReasons = [...]string{"l7_ringbuf_full", "tcp_ringbuf_full", "syscall_args_map_full"}

// MapSizes counts the entries of the tracking maps. It iterates the maps, so
// it is meant for scrapes, not hot paths.
func (t *Tracer) MapSizes() map[string]int {
	out := map[string]int{}
	for _, name := range []string{"known_socks", "sk_owners", "active_io", "active_connect", "active_mmsg"} {
		m := t.maps.Maps[name]
		n := 0
		it := m.Iterate()
		var k, v []byte
		for it.Next(&k, &v) {
			n++
		}
		out[name] = n
	}
	return out
}

// Close detaches every hook, stops the readers and frees the maps. It is
// safe to call twice, and from any goroutine but a Handler's.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		for _, l := range t.links {
			l.Close()
		}
		for _, p := range t.progs {
			p.Close()
		}
		t.mu.Lock()
		t.closed.Store(true)
		t.mu.Unlock()
		for _, rg := range []*ring{t.l7, t.tcp} {
			if rg != nil {
				rg.interrupt()
			}
		}
		t.readers.Wait()
		for _, rg := range []*ring{t.l7, t.tcp} {
			if rg != nil {
				rg.close()
			}
		}
		if t.parked != nil {
			unix.Munmap(t.parked)
		}
		t.maps.Close()
	})
	return nil
}

// EnableRunTimeStats makes the kernel account the run time of every BPF
// program (kernel.bpf_stats_enabled) until the returned Closer is closed.
// The accounting itself costs two clock reads per program run, so it is
// meant for benchmarks and debugging, not left on.
func EnableRunTimeStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enabling BPF run-time stats: %w", err)
	}
	return c, nil
}

// RunTime sums the in-kernel run time and run count of the tracer's
// programs. Both stay zero unless run-time stats are enabled.
func (t *Tracer) RunTime() (time.Duration, uint64, error) {
	var total time.Duration
	var runs uint64
	for _, p := range t.progs {
		s, err := p.Stats()
		if err != nil {
			return 0, 0, fmt.Errorf("reading program stats: %w", err)
		}
		total += s.Runtime
		runs += s.RunCount
	}
	return total, runs, nil
}
