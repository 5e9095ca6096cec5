# Every target is something a person would type. `make help` lists them.
SHELL := /bin/bash
GO    ?= go
TOOL  := $(GO) tool -modfile=tools/go.mod
# An absolute path: bench/river and examples/app are linted from their own
# directories, as modules of their own.
STATICCHECK := $(GO) tool -modfile=$(CURDIR)/tools/go.mod staticcheck

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_\/-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: generate
generate: ## Regenerate gen/ from sql/schema and sql/queries (sqlc)
	$(TOOL) sqlc generate

.PHONY: verify
verify: ## Fail when gen/ is stale or holds files no query file produces
	$(TOOL) sqlc diff
	@orphans=0; for f in gen/*.sql.go; do \
	  q="sql/queries/$$(basename $$f .go)"; \
	  if [ ! -f "$$q" ]; then echo "orphaned generated file: $$f (no $$q)"; orphans=1; fi; \
	done; exit $$orphans

.PHONY: lint
lint: ## gofmt, go vet, staticcheck (pinned in tools/go.mod) and go mod tidy must leave nothing to change
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run gofmt -w ."; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff
	cd bench/river && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) mod tidy -diff
	cd examples/app && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) mod tidy -diff

.PHONY: test-deps
test-deps: ## Start the local PostgreSQL and install pgbouncer when missing (make test does this first)
	scripts/test-deps postgres pgbouncer

# The load test needs only PostgreSQL: it never goes through a pooler. Its
# charts go to CHARTS (git-ignored by default; CHARTS= draws none).
CHARTS ?= loadtest-charts

.PHONY: loadtest
loadtest: ## The plan's load test on a local database: before vs after, side by side, charts in loadtest-charts/
	scripts/test-deps postgres
	$(GO) run ./cmd/taskq loadtest $(if $(CHARTS),--chart $(CHARTS)) $(ARGS)

.PHONY: test
test: test-deps verify lint ## Everything CI runs: set-up, generated code, lint, and every test against real PostgreSQL
	$(GO) test -race -timeout 60m ./...
	cd bench/river && $(GO) test -race -timeout 10m ./...

.PHONY: bench
bench: ## Queue benchmarks: claim/finish rates, generated vs raw pgx, claim latency by queue size
	scripts/test-deps postgres
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./tasks/

.PHONY: bench-river
bench-river: ## Burn down the same jobs through River (no-op, and doing taskq's work) and taskq's worker pool, side by side
	scripts/test-deps postgres
	cd bench/river && $(GO) run . $(ARGS)

.PHONY: vet-sql
vet-sql: ## sqlc vet against VET_DATABASE_URL (needs representative rows; TestSqlcVet does this in CI)
	$(TOOL) sqlc vet

.PHONY: build
build: ## Build the taskq command into bin/
	$(GO) build -o bin/taskq ./cmd/taskq

.PHONY: test/short
test/short: test-deps ## Only the Go tests, without the race detector
	$(GO) test -timeout 30m ./...
