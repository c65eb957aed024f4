package proc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Info is what the agent knows about one process.
type Info struct {
	PID         uint32
	ServiceName string
	// Source says which rule chose ServiceName: "env", "pod", "container",
	// "systemd" or "exe". It is kept for debugging and tests.
	Source string
	Exe    string
	Cgroup Cgroup
}

// Resolver maps PIDs to service identities from a procfs tree. It caches by
// PID; callers call Forget when a process exits so reused PIDs are re-read.
type Resolver struct {
	root string

	mu    sync.Mutex
	cache map[uint32]Info
}

// NewResolver returns a resolver reading from procRoot (normally "/proc").
func NewResolver(procRoot string) *Resolver {
	return &Resolver{root: procRoot, cache: map[uint32]Info{}}
}

// Lookup returns the identity of pid, reading procfs on first use.
func (r *Resolver) Lookup(pid uint32) Info { return r.LookupHint(pid, "") }

// LookupHint is Lookup with the command name the kernel reported with the
// event: when the process already exited (procfs is gone), the command name
// is the best name left.
func (r *Resolver) LookupHint(pid uint32, comm string) Info {
	r.mu.Lock()
	info, ok := r.cache[pid]
	r.mu.Unlock()
	if ok {
		return info
	}
	info = r.read(pid)
	if info.Source == "pid" {
		if comm == "" {
			// Not cached: a later event may carry the command name.
			return info
		}
		info.ServiceName, info.Source, info.Exe = comm, "comm", comm
	}
	r.mu.Lock()
	r.cache[pid] = info
	r.mu.Unlock()
	return info
}

// Cached returns the cached service name of pid without reading procfs.
func (r *Resolver) Cached(pid uint32) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, ok := r.cache[pid]
	return info.ServiceName, ok
}

// Forget drops the cached identity of pid.
func (r *Resolver) Forget(pid uint32) {
	r.mu.Lock()
	delete(r.cache, pid)
	r.mu.Unlock()
}

// Size is the number of cached processes (exported as self-telemetry).
func (r *Resolver) Size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

func (r *Resolver) read(pid uint32) Info {
	dir := filepath.Join(r.root, strconv.FormatUint(uint64(pid), 10))
	info := Info{PID: pid}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		info.Cgroup = ParseCgroup(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && ProgramName(b) != "" {
		// argv[0] names multi-call binaries the way users started them
		// (Debian's redis-server is a link to redis-check-rdb).
		info.Exe = ProgramName(b)
	} else if target, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		info.Exe = filepath.Base(strings.TrimSuffix(target, " (deleted)"))
	} else if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		// Kernel threads and processes of other users' mount namespaces may
		// hide exe; comm is always readable.
		info.Exe = strings.TrimSpace(string(b))
	}
	env, _ := os.ReadFile(filepath.Join(dir, "environ"))
	info.ServiceName, info.Source = ServiceName(ParseEnviron(env), info.Cgroup, info.Exe)
	if info.ServiceName == "" {
		info.ServiceName, info.Source = fmt.Sprintf("pid-%d", pid), "pid"
	}
	return info
}

// ProgramName returns the program name from a /proc/<pid>/cmdline block:
// the base name of argv[0], cut at the first space or colon because servers
// rewrite their process title ("postgres: checkpointer", "nginx: worker
// process", "redis-server *:6379").
func ProgramName(cmdline []byte) string {
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	if i := bytes.IndexAny(argv0, " :"); i >= 0 {
		argv0 = argv0[:i]
	}
	name := filepath.Base(string(argv0))
	if name == "." || name == "/" || !utf8.ValidString(name) {
		return ""
	}
	return name
}

// ParseEnviron parses a NUL-separated environment block.
func ParseEnviron(b []byte) map[string]string {
	env := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if ok && len(k) > 0 {
			env[string(k)] = string(v)
		}
	}
	return env
}

// Pod names created by Deployments end in "-<replicaset hash>-<5 chars>",
// by StatefulSets/DaemonSets/Jobs in "-<ordinal or 5 chars>"; stripping them
// yields the workload name users think of as the service.
var (
	deploymentPodRe = regexp.MustCompile(`^(.+)-[0-9a-z]{6,10}-[0-9a-z]{5}$`)
	simplePodRe     = regexp.MustCompile(`^(.+)-(?:[0-9]+|[0-9a-z]{5})$`)
)

// WorkloadFromPodName strips the controller-generated suffixes of a pod name.
func WorkloadFromPodName(pod string) string {
	if m := deploymentPodRe.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	if m := simplePodRe.FindStringSubmatch(pod); m != nil {
		return m[1]
	}
	return pod
}

// ServiceName applies the naming rules in order: OTEL_SERVICE_NAME, then the
// Kubernetes workload (pod name from HOSTNAME, which the kubelet sets to the
// pod name), then the container, then the systemd unit, then the executable.
// It returns the name and which rule chose it.
func ServiceName(env map[string]string, cg Cgroup, exe string) (string, string) {
	if s := strings.TrimSpace(env["OTEL_SERVICE_NAME"]); s != "" {
		return s, "env"
	}
	if cg.PodUID != "" {
		if h := env["HOSTNAME"]; h != "" {
			return WorkloadFromPodName(h), "pod"
		}
		return "pod-" + cg.PodUID, "pod"
	}
	if cg.ContainerID != "" {
		// Docker sets HOSTNAME to the 12-char container ID unless the user gave
		// a hostname, which is then the most meaningful name available.
		if h := env["HOSTNAME"]; h != "" && !strings.HasPrefix(cg.ContainerID, h) {
			return h, "container"
		}
		return "container-" + cg.ContainerID[:12], "container"
	}
	if cg.SystemdUnit != "" {
		return strings.TrimSuffix(cg.SystemdUnit, ".service"), "systemd"
	}
	if exe != "" {
		return exe, "exe"
	}
	return "", ""
}
