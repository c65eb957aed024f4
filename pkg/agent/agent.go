// Package agent is the vigil-agent pipeline: it turns eBPF events into
// per-process TCP and L7 metrics and spans, names processes, and exports
// the result with remote write and OTLP.
package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/prompb"
	"golang.org/x/sys/unix"

	"github.com/vigil-obs/vigil/pkg/agent/export"
	"github.com/vigil-obs/vigil/pkg/agent/proc"
	"github.com/vigil-obs/vigil/pkg/ebpf"
	"github.com/vigil-obs/vigil/pkg/ebpf/l7"
)

// Config is the agent's configuration.
type Config struct {
	RemoteWrite   export.RemoteWriteConfig `yaml:"remote_write"`
	OTLP          export.OTLPConfig        `yaml:"otlp"`
	ListenAddress string                   `yaml:"listen_address"`
	HostName      string                   `yaml:"host_name"`
	ProcRoot      string                   `yaml:"proc_root"`
	// IOHooks is ebpf.Config.IOHooks.
	IOHooks string `yaml:"io_hooks"`
	// ListenDropsInterval is how often listen-queue drops are read (see
	// listendrops.go).
	ListenDropsInterval time.Duration `yaml:"listen_drops_interval"`
	// GCPercent and MemoryLimitMB are the Go runtime's GC target and soft
	// memory limit for the agent's process (see ApplyRuntimeSettings).
	GCPercent     int `yaml:"gc_percent"`
	MemoryLimitMB int `yaml:"memory_limit_mb"`
	// SelfPID is the process excluded from tracing (default: this process).
	// Tests set it to trace their own traffic.
	SelfPID int `yaml:"-"`
}

// RegisterFlags registers every agent flag.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	c.RemoteWrite.RegisterFlags(f)
	c.OTLP.RegisterFlags(f)
	f.StringVar(&c.ListenAddress, "http.listen-address", ":9435", "Address of the agent's own /metrics endpoint. Empty disables it.")
	f.StringVar(&c.HostName, "host-name", "", "host_name label value (default: the kernel hostname).")
	f.StringVar(&c.ProcRoot, "proc-root", "/proc", "procfs mount used to name processes (e.g. /host/proc in a container).")
	f.DurationVar(&c.ListenDropsInterval, "tcp.listen-drops-interval", 5*time.Second, "How often the listen-queue drops (TcpExt ListenDrops) of each network namespace with a listening process are read; they count as that service's failed inbound connections.")
	f.IntVar(&c.GCPercent, "runtime.gc-percent", 400, "Go garbage collection target (GOGC) of the agent; the GOGC environment variable wins. The agent's live heap is a few MB, so Go's default of 100 collects every half second under load.")
	f.IntVar(&c.MemoryLimitMB, "runtime.memory-limit-mb", 80, "Soft memory limit of the agent's Go heap in MiB (GOMEMLIMIT wins): the collector works harder near it, keeping the raised GC target from growing the heap. 0 disables it.")
	f.StringVar(&c.IOHooks, "ebpf.io-hooks", ebpf.IOHooksAuto, "How socket reads and writes are seen: 'auto' uses the sock_recv_length/sock_send_length tracepoints (kernel 6.3+, socket I/O only) and falls back to the read/write syscall tracepoints; 'syscalls' always uses the latter.")
}

// ApplyRuntimeSettings sets the process's garbage-collection target and soft
// memory limit from cfg, unless GOGC or GOMEMLIMIT are set in the
// environment. They are process-wide, so the program hosting the agent
// calls it (vigil-agent's main), not New.
func ApplyRuntimeSettings(cfg Config) {
	if _, ok := os.LookupEnv("GOGC"); !ok && cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok && cfg.MemoryLimitMB > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimitMB) << 20)
	}
}

// Agent consumes tracer events. Create it with New, then Start.
type Agent struct {
	cfg    Config
	logger *slog.Logger
	host   string

	resolver *proc.Resolver
	// tracker is only used from the L7 event goroutine.
	tracker   *l7.Tracker
	lastSweep uint64
	// lastHintPID is the process of the previous L7 event, already named.
	lastHintPID uint32
	// spanAttrs is reused for every span's attributes (L7 goroutine only):
	// the exporter encodes a span when it is added and keeps none of it.
	spanAttrs   []export.Attr
	addrStrings map[netip.Addr]string
	// observers caches HTTP histogram children by label values (L7
	// goroutine only): resolving them costs label hashing, UTF-8
	// validation and formatting on every request otherwise. The cache is
	// dropped when series are deleted (seriesGen moves past observersGen).
	observers    map[obsKey]prometheus.Observer
	observersGen uint64
	seriesGen    atomic.Uint64
	// exchangeCounts caches the children of exchanges by protocol (L7
	// goroutine only).
	exchangeCounts map[l7.Protocol]prometheus.Counter

	// wallOffset converts CLOCK_MONOTONIC event timestamps to wall time.
	wallOffset int64

	exported *prometheus.Registry
	self     *prometheus.Registry
	m        *appMetrics

	mu    sync.Mutex
	conns map[uint64]*tcpConn
	// recentlyClosed keeps the peer label of the last closed connections
	// for events that follow the close (the RST of an abortive close).
	recentlyClosed map[uint64]string
	closedOrder    []uint64
	listeners      map[netip.AddrPort]string
	localIPs       map[netip.Addr]bool
	pids           map[uint32]*pidState

	// listenWake asks listenDropsLoop for a sample (capacity 1).
	listenWake              chan struct{}
	listenDropsUnattributed prometheus.Counter
	listenNamespaces        atomic.Int64

	events    *prometheus.CounterVec
	l7Events  prometheus.Counter
	tcpEvents prometheus.Counter
	exchanges *prometheus.CounterVec

	tracer *ebpf.Tracer
	rw     *export.RemoteWriter
	spans  *export.SpanExporter
	srv    *http.Server
	addr   net.Addr

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// obsKey is what the labels of an HTTP duration series are derived from.
type obsKey struct {
	server                   bool
	status                   int
	svc, inst, method, route string
	host, port               string // client side
	local, remote            netip.AddrPort
}

// maxCachedObservers bounds Agent.observers (route cardinality is the
// application's, not ours).
const maxCachedObservers = 1 << 14

type tcpConn struct {
	service, instance string
	direction, peer   string
	sent, received    uint64
}

type pidState struct {
	instance string
	goneAt   time.Time
	// listens counts the process's listening sockets seen at listen();
	// accepted says it accepted connections, which also finds listeners
	// that were there before the agent.
	listens  int
	accepted bool
}

// New builds an agent; it does not touch the kernel until Start.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	host := cfg.HostName
	if host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("reading hostname: %w", err)
		}
		host = h
	}
	a := &Agent{
		cfg:            cfg,
		logger:         logger,
		host:           host,
		resolver:       proc.NewResolver(cfg.ProcRoot),
		tracker:        l7.NewTracker(0),
		exported:       prometheus.NewRegistry(),
		self:           prometheus.NewRegistry(),
		conns:          map[uint64]*tcpConn{},
		recentlyClosed: map[uint64]string{},
		listeners:      map[netip.AddrPort]string{},
		localIPs:       localIPs(),
		pids:           map[uint32]*pidState{},
		observers:      map[obsKey]prometheus.Observer{},
		exchangeCounts: map[l7.Protocol]prometheus.Counter{},
		addrStrings:    map[netip.Addr]string{},
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_events_processed_total", Help: "Events read from the kernel ring buffers, by kind (l7, tcp).",
		}, []string{"kind"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_agent_l7_exchanges_total", Help: "Request/response pairs recognised, by protocol.",
		}, []string{"protocol"}),
		listenWake: make(chan struct{}, 1),
		listenDropsUnattributed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_agent_listen_drops_unattributed_total",
			Help: "Listen-queue drops in network namespaces where more than one service listens, which cannot be counted as one service's failed inbound connections.",
		}),
	}
	if a.cfg.ListenDropsInterval <= 0 {
		a.cfg.ListenDropsInterval = 5 * time.Second
	}
	var wall, mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return nil, fmt.Errorf("reading monotonic clock: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &wall); err != nil {
		return nil, fmt.Errorf("reading wall clock: %w", err)
	}
	a.wallOffset = wall.Nano() - mono.Nano()
	a.l7Events, a.tcpEvents = a.events.WithLabelValues("l7"), a.events.WithLabelValues("tcp")
	a.m = newAppMetrics(a.exported)
	a.self.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		a.events, a.exchanges, a.listenDropsUnattributed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_agent_tracked_connections", Help: "TCP connections tracked in user space."},
			func() float64 { a.mu.Lock(); defer a.mu.Unlock(); return float64(len(a.conns)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_agent_tracked_processes", Help: "Processes with a cached service identity."},
			func() float64 { return float64(a.resolver.Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_agent_listen_namespaces", Help: "Network namespaces whose listen-queue drops are watched."},
			func() float64 { return float64(a.listenNamespaces.Load()) }),
	)
	if cfg.RemoteWrite.URL != "" {
		rw, err := export.NewRemoteWriter(cfg.RemoteWrite, logger, a.self)
		if err != nil {
			return nil, fmt.Errorf("configuring remote write: %w", err)
		}
		a.rw = rw
	}
	if cfg.OTLP.Endpoint != "" {
		cfg.OTLP.Tenant = cfg.RemoteWrite.Tenant
		se, err := export.NewSpanExporter(cfg.OTLP, logger, a.self)
		if err != nil {
			return nil, fmt.Errorf("configuring OTLP: %w", err)
		}
		a.spans = se
	}
	return a, nil
}

func localIPs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out[p.Addr().Unmap()] = true
		}
	}
	return out
}

// Exported is the registry of metrics about traced processes (what is sent
// with remote write, before host_name and peer_service are added).
func (a *Agent) Exported() prometheus.Gatherer { return a.exported }

// Self is the registry of the agent's own telemetry (served on /metrics).
func (a *Agent) Self() prometheus.Gatherer { return a.self }

// Tracer is the loaded tracer (nil before Start).
func (a *Agent) Tracer() *ebpf.Tracer { return a.tracer }

// Start loads the eBPF programs and starts reading events and exporting.
func (a *Agent) Start(ctx context.Context) error {
	tr, err := ebpf.Load(ebpf.Config{Logger: a.logger, Registerer: a.self, SelfPID: a.cfg.SelfPID, IOHooks: a.cfg.IOHooks})
	if err != nil {
		return fmt.Errorf("loading eBPF tracer: %w", err)
	}
	a.tracer = tr
	ctx, a.cancel = context.WithCancel(ctx)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := tr.Run(ctx, a); err != nil {
			a.logger.Error("tracer stopped", "err", err)
		}
	}()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.listenDropsLoop(ctx, a.cfg.ListenDropsInterval) }()
	if a.rw != nil {
		a.wg.Add(2)
		go func() { defer a.wg.Done(); a.rw.Run(ctx) }()
		go func() { defer a.wg.Done(); a.exportLoop(ctx) }()
	}
	if a.spans != nil {
		a.wg.Add(1)
		go func() { defer a.wg.Done(); a.spans.Run(ctx) }()
	}
	if a.cfg.ListenAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.self, promhttp.HandlerOpts{}))
		mux.Handle("/metrics/exported", promhttp.HandlerFor(a.exported, promhttp.HandlerOpts{}))
		l, err := net.Listen("tcp", a.cfg.ListenAddress)
		if err != nil {
			a.Stop()
			return fmt.Errorf("listening on %s: %w", a.cfg.ListenAddress, err)
		}
		a.addr = l.Addr()
		a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("metrics server stopped", "err", err)
			}
		}()
		a.logger.Info("serving agent metrics", "addr", l.Addr().String())
	}
	return nil
}

// MetricsAddr is the address /metrics is served on (nil when disabled).
func (a *Agent) MetricsAddr() net.Addr { return a.addr }

// Stop stops everything started by Start, flushing exporters once.
func (a *Agent) Stop() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.srv != nil {
		a.srv.Close()
	}
	if a.tracer != nil {
		a.tracer.Close()
	}
	a.wg.Wait()
}

func (a *Agent) exportLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.RemoteWrite.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.Flush()
			return
		case <-t.C:
			a.Flush()
			a.collectGarbage()
		}
	}
}

// Flush snapshots the exported metrics and queues them for remote write.
func (a *Agent) Flush() {
	if a.rw == nil {
		return
	}
	series, err := a.Series(time.Now())
	if err != nil {
		a.logger.Warn("snapshotting metrics failed", "err", err)
		return
	}
	if err := a.rw.Enqueue(series); err != nil {
		a.logger.Warn("queueing metrics failed", "err", err)
	}
}

// Series converts the exported metrics to remote-write series, adding
// host_name and, where the peer is a known local server, peer_service.
func (a *Agent) Series(now time.Time) ([]prompb.TimeSeries, error) {
	return export.FromGatherer(a.exported, now, func(_ string, lbls []prompb.Label) []prompb.Label {
		lbls = append(lbls, prompb.Label{Name: lHost, Value: a.host})
		for _, l := range lbls {
			if l.Name == lPeer {
				if svc := a.PeerService(l.Value); svc != "" {
					lbls = append(lbls, prompb.Label{Name: lPeerSvc, Value: svc})
				}
				break
			}
		}
		return lbls
	})
}

// PeerService names the local service listening on peer ("ip:port"), if the
// agent has seen it accept connections or serve requests. Peers are computed
// at export time so that series do not change identity once the server is
// discovered.
func (a *Agent) PeerService(peer string) string {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if svc, ok := a.listeners[ap]; ok {
		return svc
	}
	addr := ap.Addr()
	if !addr.IsLoopback() && !a.localIPs[addr] {
		return ""
	}
	// A local peer: match servers bound to any local address on that port.
	for l, svc := range a.listeners {
		if l.Port() == ap.Port() && (l.Addr().IsLoopback() || a.localIPs[l.Addr()] || l.Addr().IsUnspecified()) {
			return svc
		}
	}
	return ""
}

// identity returns the service name and instance id of pid and remembers
// the pid for garbage collection.
func (a *Agent) identity(pid uint32, comm string) (string, string) {
	info := a.resolver.LookupHint(pid, comm)
	a.mu.Lock()
	st, ok := a.pids[pid]
	if !ok {
		st = &pidState{instance: a.host + ":" + strconv.FormatUint(uint64(pid), 10)}
		a.pids[pid] = st
	}
	instance := st.instance
	a.mu.Unlock()
	return info.ServiceName, instance
}

// collectGarbage deletes the series of processes that exited at least two
// export intervals ago (so their last values were exported), and forgets
// their identity so a reused PID is named afresh.
func (a *Agent) collectGarbage() {
	now := time.Now()
	grace := 2 * a.cfg.RemoteWrite.Interval
	a.mu.Lock()
	var dead []uint32
	for pid, st := range a.pids {
		if _, err := os.Stat(a.cfg.ProcRoot + "/" + strconv.FormatUint(uint64(pid), 10)); err == nil {
			st.goneAt = time.Time{}
			continue
		}
		if st.goneAt.IsZero() {
			st.goneAt = now
		} else if now.Sub(st.goneAt) >= grace {
			dead = append(dead, pid)
		}
	}
	for _, pid := range dead {
		a.m.deleteInstance(a.pids[pid].instance)
		delete(a.pids, pid)
		a.resolver.Forget(pid)
	}
	if len(dead) > 0 {
		a.seriesGen.Add(1)
	}
	a.mu.Unlock()
}

func (a *Agent) wall(mono uint64) time.Time { return time.Unix(0, int64(mono)+a.wallOffset) }

// HandleTCP implements ebpf.Handler.
func (a *Agent) HandleTCP(ev *ebpf.TCPEvent) {
	a.tcpEvents.Inc()
	if ev.PID == 0 {
		return
	}
	if ev.Type == ebpf.ProcessExec {
		// Re-read the identity now, while the new image surely runs.
		a.resolver.Forget(ev.PID)
		a.identity(ev.PID, "") // also registers the pid for garbage collection
		return
	}
	svc, inst := a.identity(ev.PID, "")
	m := a.m
	switch ev.Type {
	case ebpf.TCPConnect, ebpf.TCPAccept:
		dir, peer := "outbound", ev.Remote.String()
		if ev.Type == ebpf.TCPAccept {
			// Inbound peers are identified by address only: their ports are
			// ephemeral and would explode cardinality.
			dir, peer = "inbound", ev.Remote.Addr().String()
		}
		m.tcpConnections.WithLabelValues(svc, inst, dir, "ok", peer).Inc()
		a.mu.Lock()
		if len(a.conns) < maxTrackedConns {
			// Beyond the bound (close events lost to a full ring buffer),
			// new connections are still counted but not followed.
			a.conns[ev.Sock] = &tcpConn{service: svc, instance: inst, direction: dir, peer: peer}
			m.tcpActive.WithLabelValues(svc, inst, dir, peer).Inc()
		}
		newListener := false
		if ev.Type == ebpf.TCPAccept {
			a.listeners[ev.Local] = svc
			if st := a.pids[ev.PID]; st != nil && !st.accepted {
				st.accepted, newListener = true, st.listens == 0
			}
		}
		a.mu.Unlock()
		if newListener {
			a.wakeListenDrops()
		}
	case ebpf.TCPListen:
		a.mu.Lock()
		a.listeners[ev.Local] = svc
		if st := a.pids[ev.PID]; st != nil {
			st.listens++
		}
		a.mu.Unlock()
		a.wakeListenDrops()
	case ebpf.TCPUnlisten:
		a.mu.Lock()
		if st := a.pids[ev.PID]; st != nil && st.listens > 0 {
			st.listens--
		}
		a.mu.Unlock()
	case ebpf.TCPConnectFailed:
		m.tcpConnections.WithLabelValues(svc, inst, "outbound", "failed", ev.Remote.String()).Inc()
	case ebpf.TCPClose, ebpf.TCPSample:
		a.mu.Lock()
		c := a.conns[ev.Sock]
		if c == nil {
			a.mu.Unlock()
			return
		}
		var dSent, dRecv uint64
		if ev.BytesSent >= c.sent {
			dSent = ev.BytesSent - c.sent
		}
		if ev.BytesReceived >= c.received {
			dRecv = ev.BytesReceived - c.received
		}
		c.sent, c.received = max(c.sent, ev.BytesSent), max(c.received, ev.BytesReceived)
		if ev.Type == ebpf.TCPClose {
			delete(a.conns, ev.Sock)
			if len(a.closedOrder) >= maxRecentlyClosed {
				delete(a.recentlyClosed, a.closedOrder[0])
				a.closedOrder = a.closedOrder[1:]
			}
			a.recentlyClosed[ev.Sock] = c.peer
			a.closedOrder = append(a.closedOrder, ev.Sock)
		}
		a.mu.Unlock()
		if dSent > 0 {
			m.tcpBytesSent.WithLabelValues(c.service, c.instance, c.peer).Add(float64(dSent))
		}
		if dRecv > 0 {
			m.tcpBytesRecv.WithLabelValues(c.service, c.instance, c.peer).Add(float64(dRecv))
		}
		if ev.Type == ebpf.TCPClose {
			m.tcpActive.WithLabelValues(c.service, c.instance, c.direction, c.peer).Dec()
		} else if ev.SRTT > 0 {
			m.tcpRTT.WithLabelValues(c.service, c.instance, c.peer).Observe(ev.SRTT.Seconds())
		}
	case ebpf.TCPRetransmit, ebpf.TCPResetSent, ebpf.TCPResetReceived:
		peer := ev.Remote.String()
		a.mu.Lock()
		if c := a.conns[ev.Sock]; c != nil {
			peer = c.peer
		} else if p, ok := a.recentlyClosed[ev.Sock]; ok {
			// The RST of an abortive close follows the close itself, when
			// the kernel has already cleared the local port.
			peer = p
		}
		a.mu.Unlock()
		switch ev.Type {
		case ebpf.TCPRetransmit:
			m.tcpRetransmits.WithLabelValues(svc, inst, peer).Inc()
		case ebpf.TCPResetSent:
			m.tcpResets.WithLabelValues(svc, inst, "sent", peer).Inc()
		default:
			m.tcpResets.WithLabelValues(svc, inst, "received", peer).Inc()
		}
	}
}

const sweepEvery = uint64(time.Minute)

// maxRecentlyClosed bounds Agent.recentlyClosed.
const maxRecentlyClosed = 4096

// maxTrackedConns bounds the user-space connection table.
const maxTrackedConns = 1 << 18

// HandleL7 implements ebpf.Handler.
func (a *Agent) HandleL7(ev *ebpf.L7Event) {
	a.l7Events.Inc()
	// Name the process while it is alive: short-lived clients may exit
	// before their exchange completes. Consecutive events mostly come from
	// one process; record names it again anyway.
	if ev.PID != a.lastHintPID {
		a.resolver.LookupHint(ev.PID, ev.Comm)
		a.lastHintPID = ev.PID
	}
	if ev.Timestamp-a.lastSweep > sweepEvery {
		if a.lastSweep != 0 {
			a.tracker.Sweep(ev.Timestamp - 5*sweepEvery)
		}
		a.lastSweep = ev.Timestamp
	}
	ex, ok := a.tracker.Feed(l7.Segment{
		PID: ev.PID, FD: ev.FD, Timestamp: ev.Timestamp,
		Egress: ev.Dir == ebpf.Egress, Datagram: ev.SockType == ebpf.SockDgram,
		Local: ev.Local, Remote: ev.Remote, Data: ev.Data,
	})
	if ok {
		a.record(&ex, ev.Comm)
	}
}

func splitHostPort(hostport string, fallback netip.AddrPort) (string, string) {
	if hostport == "" {
		return fallback.Addr().String(), strconv.Itoa(int(fallback.Port()))
	}
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return hostport, strconv.Itoa(int(fallback.Port()))
}

func (a *Agent) record(ex *l7.Exchange, comm string) {
	proto := ex.Request.Protocol
	c, ok := a.exchangeCounts[proto]
	if !ok {
		c = a.exchanges.WithLabelValues(proto.String())
		a.exchangeCounts[proto] = c
	}
	c.Inc()
	svc, inst := a.identity(ex.PID, comm)
	d := ex.Duration()
	req, resp := &ex.Request, &ex.Response
	var k obsKey
	switch proto {
	case l7.HTTP:
		k = obsKey{svc: svc, inst: inst, method: req.Method, status: resp.Status, route: l7.Route(req.Path)}
		if ex.Role == l7.RoleServer {
			k.server, k.local = true, ex.Local
		} else {
			k.host, k.port = splitHostPort(req.Host, ex.Remote)
			k.remote = ex.Remote
		}
		a.httpObserver(k).Observe(d)
		if ex.Role == l7.RoleServer {
			a.mu.Lock()
			a.listeners[ex.Local] = svc
			a.mu.Unlock()
		}
	case l7.Postgres, l7.MySQL, l7.Redis:
		if ex.Role != l7.RoleClient {
			// Servers see the same protocol inbound; only client-side
			// operations are defined by the conventions.
			return
		}
		a.m.dbClient.WithLabelValues(svc, inst, proto.String(), req.Operation, resp.ErrorType, ex.Remote.String()).Observe(d)
	case l7.DNS:
		if ex.Role != l7.RoleClient {
			return
		}
		a.m.dnsLookup.WithLabelValues(svc, inst, req.QType, resp.RCode).Observe(d)
	default:
		return
	}
	if a.spans != nil {
		span := a.span(ex, svc, inst, &k)
		a.spans.Add(&span)
		a.spanAttrs = span.Attributes
	}
}

// httpObserver returns the duration histogram of an HTTP exchange.
func (a *Agent) httpObserver(k obsKey) prometheus.Observer {
	if g := a.seriesGen.Load(); g != a.observersGen || len(a.observers) >= maxCachedObservers {
		clear(a.observers)
		a.observersGen = g
	}
	if o, ok := a.observers[k]; ok {
		return o
	}
	status := strconv.Itoa(k.status)
	var o prometheus.Observer
	if k.server {
		// The local socket, not the Host header: clients choose the
		// header, so it is not a safe label.
		o = a.m.httpServer.WithLabelValues(k.svc, k.inst, k.method, status, k.route,
			k.local.Addr().String(), strconv.Itoa(int(k.local.Port())))
	} else {
		o = a.m.httpClient.WithLabelValues(k.svc, k.inst, k.method, status, k.route, k.host, k.port, k.remote.String())
	}
	a.observers[k] = o
	return o
}

// span builds the span of a recorded exchange; for HTTP, hk holds the
// route, host and port its metrics were recorded with. It is separate from
// record so that the metrics-only hot path builds no attributes. The
// attributes live in a.spanAttrs until the next span.
func (a *Agent) span(ex *l7.Exchange, svc, inst string, hk *obsKey) export.Span {
	req, resp := &ex.Request, &ex.Response
	span := export.Span{
		ServiceName: svc, ServiceInstanceID: inst, HostName: a.host,
		Start: a.wall(ex.Start), End: a.wall(ex.End), Kind: export.SpanKindClient,
		Attributes: a.spanAttrs[:0],
	}
	str := func(k, v string) { span.Attributes = append(span.Attributes, export.StrAttr(k, v)) }
	num := func(k string, v int) { span.Attributes = append(span.Attributes, export.IntAttr(k, int64(v))) }
	str("network.peer.address", a.addrString(ex.Remote.Addr()))
	num("network.peer.port", int(ex.Remote.Port()))
	switch proto := req.Protocol; proto {
	case l7.HTTP:
		route := hk.route
		str("http.request.method", req.Method)
		num("http.response.status_code", resp.Status)
		str("url.path", req.Path)
		if ex.Role == l7.RoleServer {
			span.Kind = export.SpanKindServer
			span.Name = req.Method + " " + route
			str("http.route", route)
			str("server.address", a.addrString(ex.Local.Addr()))
			num("server.port", int(ex.Local.Port()))
			span.Error = resp.Status >= 500
		} else {
			span.Name = req.Method
			str("server.address", hk.host)
			if p, err := strconv.Atoi(hk.port); err == nil {
				num("server.port", p)
			}
			span.Error = resp.Status >= 400
		}
		if span.Error {
			str("error.type", strconv.Itoa(resp.Status))
		}
	case l7.Postgres, l7.MySQL, l7.Redis:
		span.Name = req.Operation
		str("db.system.name", proto.String())
		str("db.operation.name", req.Operation)
		str("server.address", a.addrString(ex.Remote.Addr()))
		num("server.port", int(ex.Remote.Port()))
		if resp.ErrorType != "" {
			span.Error = true
			str("error.type", resp.ErrorType)
			if proto == l7.Postgres || proto == l7.MySQL {
				str("db.response.status_code", resp.ErrorType)
			}
		}
	case l7.DNS:
		span.Name = "DNS " + req.QType
		str("dns.question.name", req.QName)
		str("dns.question.type", req.QType)
		str("dns.response_code", resp.RCode)
		span.Error = resp.RCode != "NoError"
	}
	return span
}

// maxCachedAddrs bounds Agent.addrStrings; peers are few on most nodes.
const maxCachedAddrs = 4096

// addrString is addr.String(), cached: spans name the same few addresses
// over and over (L7 goroutine only).
func (a *Agent) addrString(addr netip.Addr) string {
	if s, ok := a.addrStrings[addr]; ok {
		return s
	}
	if len(a.addrStrings) >= maxCachedAddrs {
		clear(a.addrStrings)
	}
	s := addr.String()
	a.addrStrings[addr] = s
	return s
}

// CachedServiceName is the service name the agent has cached for pid, if
// any (for tests and debugging).
func (a *Agent) CachedServiceName(pid uint32) (string, bool) { return a.resolver.Cached(pid) }

var _ ebpf.Handler = (*Agent)(nil)
