# husk: `make run` starts huskd on embedded defaults, `make test` runs every
# test, `make bench` compares husk with containerd. Each installs what is
# missing first (scripts/deps.sh, apt).
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := $(CURDIR)/bin
# Integration tests share the machine's CNI plugins and iptables: run their
# packages one at a time, tests inside a package in parallel.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: all build deps run test lint unit bench clean

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/huskd ./cmd/huskd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/husk-pause ./cmd/husk-pause
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(BIN)/husk-monitor ./cmd/husk-monitor

run: deps build
	exec $(BIN)/huskd $(ARGS)

# test/e2e is a module of its own (see its go.mod): lint both modules.
lint:
	@test -z "$$(gofmt -l cmd internal test)" || { echo "gofmt needed:"; gofmt -l cmd internal test; exit 1; }
	$(GO) mod tidy -diff
	cd test/e2e && $(GO) mod tidy -diff
	$(GO) vet ./...
	cd test/e2e && $(GO) vet ./...
	$(GO) build -o $(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck
	$(BIN)/staticcheck ./...
	cd test/e2e && $(BIN)/staticcheck ./...

test: deps build lint
	HUSK_BIN=$(BIN) $(GO) test $(TESTFLAGS) -p 1 ./...
	cd test/e2e && HUSK_BIN=$(BIN) $(GO) test $(TESTFLAGS) ./...

unit:
	$(GO) test -count=1 -short ./...

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory build
	$(GO) run ./cmd/husk-bench -huskd $(BIN)/huskd -pause $(BIN)/husk-pause $(BENCHFLAGS)

clean:
	rm -rf $(BIN)
