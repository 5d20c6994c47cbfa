# mqdapr: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin
# Bounded: every test has its own timeout; this is the ceiling for the whole run.
TEST_TIMEOUT ?= 30m
GOTESTFLAGS ?= -race -count=1

.PHONY: all build test test-unit vet run bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

## test: installs missing test dependencies (Mosquitto) and runs every test.
test:
	./scripts/install-test-deps.sh
	$(GO) vet ./...
	$(GO) test $(GOTESTFLAGS) -timeout $(TEST_TIMEOUT) ./...

## run: builds everything and runs it on the embedded default (see README).
run: build
	./scripts/run.sh

## bench: Go benchmarks (figures, never assertions).
bench:
	./scripts/install-test-deps.sh
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m ./...

clean:
	rm -rf $(BIN)
