package ebpf

import (
	"os"
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

func TestLoadAttachesEveryHook(t *testing.T) {
	requireRoot(t)
	reg := prometheus.NewPedanticRegistry()
	tr, err := Load(Config{Registerer: reg})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	hooks := tr.Hooks()
	if len(hooks) < 27 {
		t.Fatalf("only %d hooks", len(hooks))
	}
	for _, h := range hooks {
		// Every hook is a tracepoint, which this kernel supports: any failure
		// is a bug (verifier rejection, wrong tracepoint name, ...).
		if h.Err != nil {
			t.Errorf("hook %s did not attach: %v", h.Hook, h.Err)
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

func TestLoadKeepsRunningWhenAHookFails(t *testing.T) {
	requireRoot(t)
	reg := prometheus.NewPedanticRegistry()
	tr, err := Load(Config{Registerer: reg, hookOverride: map[string]string{"tcp_probe": "tcp/no_such_tracepoint"}})
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
