# Vigil build and test entry points. `make test` is the one command CI runs: it installs every
# non-Go tool the tests need (MinIO, ...) when missing, then runs every test.
GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)

TEST_TIMEOUT  ?= 30m

.PHONY: all build test test-deps bench vet fmt minio

all: build

build:
	$(GO) build -o bin/vigil ./cmd/vigil

fmt:
	gofmt -l -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

# Components add their own prerequisites to test-deps from mk/*.mk.
test-deps: minio

minio:
	@command -v minio >/dev/null 2>&1 || { echo "installing minio into $(GOBIN)"; $(GO) install github.com/minio/minio@latest; }

test: test-deps
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	VIGIL_REQUIRE_MINIO=1 $(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

-include mk/*.mk
