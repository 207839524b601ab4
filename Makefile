# threepidd: `make run` serves on SQLite with threepidd.example.yaml; `make test`
# is the full test suite (what CI runs).
GO ?= go
THREEPIDD_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
export THREEPIDD_TEST_POSTGRES
FUZZTIME ?= 30000x
CONFIG ?= threepidd.example.yaml

.PHONY: run build test vet tools peers race fuzz-smoke realpeer bench fmt

run:
	$(GO) run ./cmd/threepidd -config $(CONFIG)

build:
	$(GO) build -o bin/threepidd ./cmd/threepidd

# The README's test command: vet, the tools the suite needs (promtool; nginx
# for the cluster tests of tests/e2e), the race suite on SQLite and Postgres
# (tests/monitoring checks the alerting rules with promtool and the
# dashboard's metrics against the binary), a short run of
# every fuzz target, and the real-peer suite (Dendrite, nginx, matrix-js-sdk).
test: vet tools peers race fuzz-smoke realpeer

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags realpeer ./tests/realpeer/ ./tests/perf/peers/

# promtool, from Debian's prometheus package (idempotent).
tools:
	bash deploy/prometheus/setup.sh

# nginx, from Debian's packages (idempotent): tests/e2e puts several
# instances behind deploy/nginx/threepidd.conf.
peers:
	bash deploy/nginx/setup.sh >/dev/null

race:
	$(GO) test -race -count=1 -timeout 30m ./...

fuzz-smoke:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-smoke.sh

realpeer:
	bash tests/realpeer/setup.sh
	$(GO) test -tags realpeer -count=1 -timeout 30m ./tests/realpeer/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fmt:
	gofmt -w $$(git ls-files '*.go')
