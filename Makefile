# mqdapr: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin
# Bounded: every test has its own timeout; this is the ceiling for the whole run.
TEST_TIMEOUT ?= 30m
GOTESTFLAGS ?= -race -count=1

# Fuzz targets run for a bounded time in every `make test` (go test -fuzz takes one target at a time).
FUZZTIME ?= 10s
FUZZ_TARGETS := \
	./broker:FuzzReadPacket \
	./broker:FuzzConnection \
	./broker:FuzzReadPacketV3 \
	./broker:FuzzConnectionV3 \
	./broker:FuzzWebSocketConnection \
	./broker/statestore:FuzzHandle \
	./internal/hlc:FuzzParse \
	./internal/resp3:FuzzDecodeArray \
	./internal/resp3:FuzzDecodeResponse \
	./internal/resp3:FuzzEncodeDecodeArray \
	./components/pubsub-mqtt5/partition:FuzzParse \
	./components/pubsub-mqtt5:FuzzParseMetadata \
	./components/state-kv:FuzzParseMetadata

.PHONY: all build images test fuzz vet run bench bench-harness chaos test-daprd-1.15 clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./app

## images: one FROM scratch image per program, linux/amd64 and linux/arm64, from static binaries
## built here; nothing pulled (scripts/images.sh; IMAGE_ARCHES, VERSION, IMAGE_PREFIX override).
images:
	./scripts/images.sh

vet:
	$(GO) vet ./...

## test: installs missing test dependencies (Mosquitto, daprd) and runs every test.
test:
	./scripts/install-test-deps.sh
	@# The end-to-end tests need daprd: reuse one that fits, or build it once (~15 min cold).
	./scripts/daprd.sh >/dev/null
	$(GO) vet ./...
	$(GO) test $(GOTESTFLAGS) -timeout $(TEST_TIMEOUT) ./...
	# The pub/sub component's tests again, against the embedded broker instead of Mosquitto.
	MQDAPR_TEST_BROKER=embedded $(GO) test $(GOTESTFLAGS) -timeout $(TEST_TIMEOUT) ./components/pubsub-mqtt5/...
	# The key-value store driven by the public AIO Go SDK (a module of its own: tests/aiosdk/go.mod).
	cd tests/aiosdk && $(GO) vet ./... && $(GO) test $(GOTESTFLAGS) -timeout $(TEST_TIMEOUT) ./...
	# The images built from their Dockerfiles and run as containers with testcontainers-go (a module
	# of its own: tests/containers/go.mod). Not under -race: the work is in the containers.
	cd tests/containers && $(GO) vet ./... && MQDAPR_TEST_DOCKER=required $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# The Kubernetes manifests (deploy/kubernetes) validated offline: kustomize render, strict decoding,
	# Dapr's injector patch code, the components' metadata parsers (a module of its own:
	# tests/kubernetes/go.mod). Not under -race: nothing in it is concurrent, and it compiles much.
	cd tests/kubernetes && $(GO) vet ./... && $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# Dapr's conformance suites out of process: the component binaries over their unix sockets through
	# daprd's own gRPC clients, pub/sub on the embedded broker and on Mosquitto (a module of its own:
	# tests/conformance/go.mod; results in tests/conformance/README.md). The test binary is not under
	# -race (dapr's client packages pull in k8s.io/client-go); the component binaries it builds are.
	cd tests/conformance && $(GO) vet ./... && $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) fuzz

## fuzz: every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

## run: builds everything and runs it on the embedded default (see README).
run: build
	./scripts/daprd.sh >/dev/null
	./$(BIN)/mqdapr-run

## chaos: the fault tests alone (tests/e2e TestFaultMatrix, TestFaultReplicaLostForGood,
## TestFaultSlowConsumer; `make test` runs them too, with each lasting fault once): 10,000 QoS 1 readings at 100/s through the whole
## chain, every kill 3 times and the broker frozen 20 s / unreachable 30 s 3 times each, at moments
## drawn from a seed, then two replicas with one killed for good, then a slow consumer held by
## Receive Maximum with the broker queue and the component's memory bounded; writes docs/reliability.md
## (~6-7 min). Replay a failure with its printed seed: make chaos MQDAPR_FAULT_SEED=<seed>.
MQDAPR_FAULT_READINGS ?= 10000
MQDAPR_FAULT_RATE ?= 100
MQDAPR_FAULT_LONG_REPEATS ?= 3
chaos:
	./scripts/install-test-deps.sh
	./scripts/daprd.sh >/dev/null
	MQDAPR_FAULT_SEED=$(MQDAPR_FAULT_SEED) MQDAPR_FAULT_READINGS=$(MQDAPR_FAULT_READINGS) MQDAPR_FAULT_RATE=$(MQDAPR_FAULT_RATE) \
	  MQDAPR_FAULT_LONG_REPEATS=$(MQDAPR_FAULT_LONG_REPEATS) MQDAPR_FAULT_REPORT=docs/reliability.md \
	  $(GO) test -count=1 -timeout 20m -run '^TestFault(Matrix|ReplicaLostForGood|SlowConsumer)$$' -v ./tests/e2e/

## test-daprd-1.15: the end-to-end exactly-once, kill and fault tests again through daprd 1.15.0,
## which hands a pluggable component's messages to the app concurrently (1.16 one at a time per
## subscription), so Receive Maximum parallelism (the connector's 8 device topics, ordering: topic)
## reaches the app through a real daprd. Builds daprd 1.15.0 once (~10-15 min cold), so not in
## `make test`; ~8 min once built.
test-daprd-1.15:
	./scripts/install-test-deps.sh
	DAPRD_VERSION=v1.15.0 ./scripts/daprd.sh >/dev/null
	DAPRD_VERSION=v1.15.0 $(GO) test -count=1 -timeout 30m -v -run '^(TestConnectorExactlyOnceAndRedelivery|TestConnectorSurvivesStateComponentKill|TestConnectorReplicasSplitSurviveKillAndShareConfig|TestDaprdPublishSubscribeAndRedelivery|TestComponentKilledAndRestartedWithDaprd|TestPartitionedSubscriptionSurvivesKills|TestFault(Matrix|ReplicaLostForGood|SlowConsumer))$$' ./tests/e2e/
	MQDAPR_DAPRD_V1_15=$$(DAPRD_VERSION=v1.15.0 ./scripts/daprd.sh) $(GO) test -count=1 -v -run '^TestReceiveMaximumParallelismByDaprdVersion$$' ./tests/e2e/

## bench: Go benchmarks (figures, never assertions), then bench-harness.
bench:
	./scripts/install-test-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m ./...
	$(MAKE) bench-harness

## bench-harness: the side-by-side runs through daprd (bench/), writing BENCHMARKS.md (6-15 min;
## BENCH_QUICK=1: one short round, a smoke run). Installs redis-server and Mosquitto when missing.
bench-harness:
	./scripts/install-bench-deps.sh
	./scripts/daprd.sh >/dev/null
	$(GO) run ./bench/cmd/mqdapr-bench -out BENCHMARKS.md

clean:
	rm -rf $(BIN)
