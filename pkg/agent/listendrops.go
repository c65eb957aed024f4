package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Inbound connections that fail before accept are dropped by the listener
// when its accept queue is full. The kernel has no tracepoint there: it only
// counts them, per network namespace, in TcpExt ListenDrops (which includes
// ListenOverflows). The agent reads that counter for the namespaces of the
// processes it saw call listen() and, where one service listens in a
// namespace (a Kubernetes pod, a container), counts the drops as its failed
// inbound connections. Drops in a namespace shared by several listening
// services (the host's) cannot be told apart; they are counted in
// vigil_agent_listen_drops_unattributed_total.

// listenDropsLoop samples the listening namespaces every interval, and when
// woken (a new listener, whose namespace needs a baseline before its first
// drops).
func (a *Agent) listenDropsLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := map[uint64]uint64{} // netns inode -> ListenDrops at the last sample
	for {
		a.sampleListenDrops(prev)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.listenWake:
		}
	}
}

// wakeListenDrops asks listenDropsLoop for a sample soon.
func (a *Agent) wakeListenDrops() {
	select {
	case a.listenWake <- struct{}{}:
	default:
	}
}

type listeningProc struct {
	pid           uint32
	service, inst string
}

func (a *Agent) sampleListenDrops(prev map[uint64]uint64) {
	a.mu.Lock()
	pids := make([]uint32, 0, 8)
	for pid, st := range a.pids {
		if st.listens > 0 || st.accepted {
			pids = append(pids, pid)
		}
	}
	a.mu.Unlock()
	slices.Sort(pids)
	byNS := map[uint64][]listeningProc{}
	for _, pid := range pids {
		ns, err := netnsInode(a.cfg.ProcRoot, pid)
		if err != nil {
			continue // exited
		}
		svc, inst := a.identity(pid, "")
		byNS[ns] = append(byNS[ns], listeningProc{pid, svc, inst})
	}
	for ns, procs := range byNS {
		drops, err := readListenDrops(a.cfg.ProcRoot, procs[0].pid)
		if err != nil {
			a.logger.Debug("reading listen drops", "pid", procs[0].pid, "err", err)
			continue
		}
		last, seen := prev[ns]
		prev[ns] = drops
		if !seen || drops <= last {
			continue
		}
		d := float64(drops - last)
		services := map[string]bool{}
		for _, p := range procs {
			services[p.service] = true
		}
		if len(services) != 1 {
			a.listenDropsUnattributed.Add(d)
			continue
		}
		// The lowest pid of the service: the parent of pre-forked workers.
		p := procs[0]
		a.m.tcpConnections.WithLabelValues(p.service, p.inst, "inbound", "failed", "").Add(d)
	}
	// Namespaces no longer watched start from a new baseline if they come
	// back.
	for ns := range prev {
		if _, ok := byNS[ns]; !ok {
			delete(prev, ns)
		}
	}
	a.listenNamespaces.Store(int64(len(prev)))
}

func netnsInode(procRoot string, pid uint32) (uint64, error) {
	fi, err := os.Stat(procRoot + "/" + strconv.FormatUint(uint64(pid), 10) + "/ns/net")
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("no inode for the network namespace of %d", pid)
	}
	return st.Ino, nil
}

func readListenDrops(procRoot string, pid uint32) (uint64, error) {
	b, err := os.ReadFile(procRoot + "/" + strconv.FormatUint(uint64(pid), 10) + "/net/netstat")
	if err != nil {
		return 0, err
	}
	return parseListenDrops(b)
}

// parseListenDrops returns TcpExt ListenDrops from the contents of
// /proc/<pid>/net/netstat: pairs of lines, the first naming the fields of a
// group and the second giving their values.
func parseListenDrops(b []byte) (uint64, error) {
	var names []byte
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		rest, ok := bytes.CutPrefix(line, []byte("TcpExt:"))
		if !ok {
			continue
		}
		if names == nil {
			names = rest
			continue
		}
		values := bytes.Fields(rest)
		for i, name := range bytes.Fields(names) {
			if string(name) != "ListenDrops" {
				continue
			}
			if i >= len(values) {
				return 0, fmt.Errorf("TcpExt has no value for ListenDrops")
			}
			v, err := strconv.ParseUint(string(values[i]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("TcpExt ListenDrops: %w", err)
			}
			return v, nil
		}
		return 0, fmt.Errorf("TcpExt has no ListenDrops field")
	}
	return 0, fmt.Errorf("no TcpExt lines")
}
