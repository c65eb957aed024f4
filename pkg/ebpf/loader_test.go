package ebpf

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading eBPF programs needs root; run the tests as root (CI does)")
	}
}

func TestEventLayout(t *testing.T) {
	// decode() hard-codes offsets; they must follow the generated structs.
	if got := unsafe.Offsetof(agentL7Event{}.Daddr); got != 56 {
		t.Fatalf("l7_event.daddr offset = %d", got)
	}
	if l7HeaderSize != 88 || unsafe.Offsetof(agentL7Event{}.Comm) != 72 {
		t.Fatalf("l7_event header = %d", l7HeaderSize)
	}
	if got := unsafe.Offsetof(agentTcpEvent{}.Daddr); got != 64 || tcpEventSize != 80 {
		t.Fatalf("tcp_event daddr offset = %d size = %d", got, tcpEventSize)
	}
}

// hookSet returns the attach outcome of every hook of tr, failing the test
// for any hook that did not attach: every hook is a tracepoint, which this
// kernel supports, so a failure is a bug (verifier rejection, wrong
// tracepoint name, a helper the program type may not call, ...).
func hookSet(t *testing.T, tr *Tracer) map[string]bool {
	t.Helper()
	set := map[string]bool{}
	for _, h := range tr.Hooks() {
		if h.Err != nil {
			t.Errorf("hook %s did not attach: %v", h.Hook, h.Err)
		}
		set[h.Hook] = true
	}
	return set
}

func programCount(t *testing.T) int {
	t.Helper()
	spec, err := loadAgent()
	if err != nil {
		t.Fatal(err)
	}
	return len(spec.Programs)
}

func TestLoadAttachesEveryHook(t *testing.T) {
	requireRoot(t)
	reg := prometheus.NewPedanticRegistry()
	tr, err := Load(Config{Registerer: reg})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	hooks := hookSet(t, tr)
	// This kernel (6.3+) has sock_{recv,send}_length: they see socket I/O,
	// and the read/write syscall tracepoints are not attached at all.
	if want := programCount(t) - len(fallbackPrograms); len(hooks) != want {
		t.Errorf("%d hooks attached, want %d: %v", len(hooks), want, hooks)
	}
	for _, want := range []string{"sock/sock_recv_length", "sock/sock_send_length", "sock/inet_sock_set_state",
		"tcp/tcp_retransmit_skb", "syscalls/sys_exit_accept4", "syscalls/sys_enter_connect", "syscalls/sys_enter_sendmmsg"} {
		if !hooks[want] {
			t.Errorf("hook %s not attached", want)
		}
	}
	if hooks["tcp/tcp_probe"] {
		t.Errorf("tcp_probe attached next to sock_{recv,send}_length, which sample RTT")
	}
	for h := range hooks {
		for _, io := range []string{"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg"} {
			if h == "syscalls/sys_enter_"+io || h == "syscalls/sys_exit_"+io {
				t.Errorf("syscall I/O hook %s attached next to sock_{recv,send}_length", h)
			}
		}
	}
	n, err := testutil.GatherAndCount(reg, "vigil_agent_hook_attached")
	if err != nil || n != len(hooks) {
		t.Fatalf("vigil_agent_hook_attached series = %d (%v), want %d", n, err, len(hooks))
	}
	drops, err := tr.Drops()
	if err != nil || len(drops) != len(dropReasons) {
		t.Fatalf("Drops = %v, %v", drops, err)
	}
}

// The syscall I/O hooks are what kernels before 6.3 run; here they are
// chosen by configuration, and every one of them must attach.
func TestLoadAttachesSyscallIOHooks(t *testing.T) {
	requireRoot(t)
	tr, err := Load(Config{IOHooks: IOHooksSyscalls})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	hooks := hookSet(t, tr)
	if want := programCount(t) - len(sockLengthPrograms); len(hooks) != want {
		t.Errorf("%d hooks attached, want %d: %v", len(hooks), want, hooks)
	}
	if hooks["sock/sock_recv_length"] || hooks["sock/sock_send_length"] {
		t.Errorf("sock_{recv,send}_length attached next to the syscall I/O hooks")
	}
	for _, hook := range []string{"syscalls/sys_enter_read", "syscalls/sys_exit_read", "syscalls/sys_enter_sendmsg", "syscalls/sys_exit_recvfrom",
		"syscalls/sys_enter_sendmmsg", "syscalls/sys_exit_sendmmsg", "tcp/tcp_probe"} {
		if !hooks[hook] {
			t.Errorf("hook %s not attached", hook)
		}
	}
}

func TestLoadRejectsUnknownIOHookMode(t *testing.T) {
	if _, err := Load(Config{IOHooks: "kprobes"}); err == nil || !strings.Contains(err.Error(), `"kprobes"`) {
		t.Fatalf("Load with an unknown mode: %v", err)
	}
}

// Without sock_send_length (kernels before 6.3) the loader falls back to the
// syscall I/O hooks and does not keep half of the pair.
func TestLoadFallsBackToSyscallIOHooks(t *testing.T) {
	requireRoot(t)
	tr, err := Load(Config{hookOverride: map[string]string{"sock_send_length": "sock/no_such_tracepoint"}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	status := map[string]error{}
	for _, h := range tr.Hooks() {
		status[h.Hook] = h.Err
	}
	for _, name := range fallbackPrograms {
		hook := "tcp/tcp_probe"
		if name != "tcp_probe" {
			dir, io, _ := strings.Cut(name, "_")
			hook = "syscalls/sys_" + dir + "_" + io
		}
		if err, ok := status[hook]; !ok || err != nil {
			t.Errorf("fallback hook %s: present %v, err %v", hook, ok, err)
		}
	}
	if !errors.Is(status["sock/sock_recv_length"], errUnusedSockLength) || status["sock/no_such_tracepoint"] == nil {
		t.Errorf("sock_recv_length must be reported unused (%v) and the missing tracepoint failed (%v)", status["sock/sock_recv_length"], status["sock/no_such_tracepoint"])
	}
}

func TestLoadKeepsRunningWhenAHookFails(t *testing.T) {
	requireRoot(t)
	reg := prometheus.NewPedanticRegistry()
	tr, err := Load(Config{Registerer: reg, hookOverride: map[string]string{"tcp_retransmit_skb": "tcp/no_such_tracepoint"}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	failed := 0
	for _, h := range tr.Hooks() {
		if h.Err != nil {
			failed++
			if h.Hook != "tcp/no_such_tracepoint" {
				t.Errorf("unexpected failure of %s: %v", h.Hook, h.Err)
			}
		}
	}
	if failed != 1 {
		t.Fatalf("%d hooks failed, want 1", failed)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var zero, one int
	for _, mf := range mfs {
		if mf.GetName() != "vigil_agent_hook_attached" {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch m.GetGauge().GetValue() {
			case 0:
				zero++
				if m.GetLabel()[0].GetValue() != "tcp/no_such_tracepoint" {
					t.Errorf("hook %s reported as not attached", m.GetLabel()[0].GetValue())
				}
			case 1:
				one++
			}
		}
	}
	if zero != 1 || one != len(tr.Hooks())-1 {
		t.Fatalf("attached gauge: %d zero, %d one", zero, one)
	}
}
