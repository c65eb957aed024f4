// Package ebpf loads and attaches Vigil's eBPF programs (TCP lifecycle and L7
// payload capture from tracepoints) and decodes their events.
package ebpf

// The generated agent_x86_bpfel.{go,o} are committed; `make ebpf` reruns this
// and `make ebpf-check` fails when the committed output is stale.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -target amd64 -go-package ebpf -type l7_event -type tcp_event -output-dir "$BPF2GO_OUTPUT_DIR" agent bpf/agent.bpf.c -- -I./bpf -I./bpf/headers -O2 -g -Wall -Werror
