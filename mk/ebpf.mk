# vigil-agent / eBPF: toolchain and test dependencies, regeneration and a
# staleness check of the committed bpf2go output.
#
#   make ebpf        regenerate pkg/ebpf/agent_x86_bpfel.{go,o} from pkg/ebpf/bpf/*.c
#   make ebpf-check  fail if the committed generated files differ from a fresh build
#   make ebpf-deps   install clang-14/llvm-14 (bpf2go), redis-server, PostgreSQL and
#                    MariaDB (used by the agent's real-traffic tests) when missing

EBPF_PKG     := pkg/ebpf
EBPF_SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: ebpf ebpf-deps ebpf-check

ebpf-deps:
	@missing=""; \
	command -v clang-14 >/dev/null 2>&1 || missing="$$missing clang-14"; \
	command -v llvm-strip-14 >/dev/null 2>&1 || missing="$$missing llvm-14"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v psql >/dev/null 2>&1 || missing="$$missing postgresql-client"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v tc >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	command -v mariadb-install-db >/dev/null 2>&1 || missing="$$missing mariadb-server-core"; \
	command -v mariadb >/dev/null 2>&1 || missing="$$missing mariadb-client-core"; \
	if [ -n "$$missing" ]; then \
		echo "ebpf-deps: installing$$missing"; \
		$(EBPF_SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(EBPF_SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

ebpf: ebpf-deps
	cd $(EBPF_PKG) && $(GO) generate ./

ebpf-check: ebpf-deps
	@tmp=$$(mktemp -d); \
	cd $(EBPF_PKG) && BPF2GO_OUTPUT_DIR=$$tmp $(GO) generate ./ && \
	for f in agent_x86_bpfel.go agent_x86_bpfel.o; do \
		cmp -s $$tmp/$$f $$f || { echo "ebpf-check: $(EBPF_PKG)/$$f is stale; run 'make ebpf' and commit the result"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "ebpf-check: generated eBPF objects are up to date"

test-deps: ebpf-deps ebpf-check
