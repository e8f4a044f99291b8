# capstream's make targets. `make help` lists them.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
# FUZZTIME is how long make test runs each fuzz target.
FUZZTIME ?= 3s

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/capstream, the production binary (static, no cgo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/capstream ./cmd/capstream

.PHONY: build-dev
build-dev: ## Build bin/capstream-dev, the whole pipeline in one process (make demo)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/capstream-dev ./cmd/capstream-dev

.PHONY: generate
generate: ## Regenerate deepcopy code for schemas/v3
	$(CONTROLLER_GEN) object paths=./schemas/v3/...

.PHONY: fmt
fmt: ## Format the code
	gofmt -w $$(git ls-files '*.go')

.PHONY: lint
lint: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: deps-up
deps-up: ## Install (if missing) and start ClickHouse, S3 (versitygw), etcd, kube-apiserver
	deploy/dev/deps.sh up

.PHONY: deps-down
deps-down: ## Stop the services deps-up started and remove their data
	deploy/dev/deps.sh down

.PHONY: test
test: ## Whole suite: start services, lint, go test -race, fuzz each target for FUZZTIME
	FUZZTIME=$(FUZZTIME) deploy/dev/test.sh

.PHONY: test-short
test-short: ## Unit tests only, no services (go test -short)
	$(GO) test -short -count=1 ./...

.PHONY: bench
bench: ## Micro-benchmarks, then the end-to-end harness with ratios against tcpdump and argus (services up)
	$(GO) test -run '^$$' -bench . -skip '^BenchmarkLiveUDPBlast$$' -benchtime 200ms -benchmem -count 1 ./...
	$(GO) run ./bench $(BENCHFLAGS)

.PHONY: demo
demo: ## End-to-end demo on a simulated node: capture, flows, pcaps (needs root)
	deploy/dev/demo.sh
