# Slipway. `make demo` and `make test` are the two commands a newcomer runs
# (as root, on Debian 12); both install what a fresh machine lacks first
# (test/install-deps.sh, which .ci/run uses too).
SHELL      := /bin/bash
GO         ?= go
BIN        := $(CURDIR)/bin
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w $(foreach p,agent/cli operator/cli server/daemon,-X github.com/slipway-dev/slipway/$(p).Version=$(VERSION))
GOBUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
UNIT_PKGS  := ./agent/... ./shared/... ./server/... ./operator/... ./packaging/... ./test/fleetsim/
E2E_PKGS   := ./test/...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

deps: ## install what a bare Debian 12 machine lacks (idempotent; quiet when nothing is missing)
	@./test/install-deps.sh

.PHONY: all help deps build packages test unit e2e check openapi-lint fuzz bench bench-fleet bench-ui soak crash-soak demo demo-down fresh-check nixos-docs clean

all: build

build: ## build the binaries into bin/
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/ ./agent/cmd/slipway-agent ./server/cmd/slipway-server ./operator/cmd/slipway ./test/cmd/slipway-nodes ./test/cmd/slipway-testsvc

packages: build ## .deb packages of slipway-agent, slipway-server and slipway into dist/ (nfpm)
	rm -f $(CURDIR)/dist/*.deb
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) \
		$(GO) run ./packaging/cmd/slipway-packages -bin $(BIN) -out $(CURDIR)/dist -version $(VERSION)

test: unit e2e ## the whole suite: unit tests (race) and end-to-end on real systemd nodes

unit: deps
	$(GO) test -race -count=1 $(UNIT_PKGS)

e2e: deps ## end-to-end on systemd-nspawn nodes (root; node root cached in /var/cache/slipway)
	SLIPWAY_E2E=1 $(GO) test -count=1 -timeout 60m -v $(E2E_PKGS) 2>&1 | tee /tmp/slipway-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

nixos-docs: ## regenerate docs/nixos-options.md from the NixOS modules' options (nix-instantiate; nixpkgs' lib at third_party/nixpkgs-lib/lib or SLIPWAY_NIXPKGS_LIB)
	$(GO) test -count=1 -run '^TestOptionDocs$$' ./test/nixos/ -args -update

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## /\1\t/' | expand -t 14

check: ## vet, staticcheck, race tests, go.mod tidy, openapi-lint; needs what openapi-lint needs (not part of make test)
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -race -count=1 $(UNIT_PKGS)
	cp go.mod /tmp/slipway-go.mod.bak && cp go.sum /tmp/slipway-go.sum.bak
	$(GO) mod tidy
	@if ! diff -q go.mod /tmp/slipway-go.mod.bak >/dev/null || ! diff -q go.sum /tmp/slipway-go.sum.bak >/dev/null; then \
		cp /tmp/slipway-go.mod.bak go.mod; cp /tmp/slipway-go.sum.bak go.sum; \
		echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi
	@$(MAKE) --no-print-directory openapi-lint

openapi-lint: ## redocly lint, recommended rules, of shared/api/openapi.yaml (redocly.yaml); needs node >= 20.19 and npm, and the npm registry for npm ci (@redocly/cli pinned in package-lock.json)
	npm ci --no-audit --no-fund --loglevel=error
	npx --no-install redocly lint

fuzz: ## run every fuzzer for FUZZTIME (default 30s each)
	@set -e; for spec in \
	  FuzzParseCanonical:./shared/generation/ FuzzValidate:./shared/generation/ FuzzValidateFields:./shared/generation/ \
	  FuzzLoadTOML:./shared/release/ FuzzParse:./shared/selector/ FuzzParseRecipient:./shared/seal/ \
	  FuzzCompareSelf:./shared/gendiff/ FuzzComparePair:./shared/gendiff/ FuzzDiffMatchesGendiff:./agent/activate/ \
	  FuzzPlan:./server/waves/ FuzzParse:./shared/unitfile/ FuzzParse:./shared/window/ \
	  FuzzParseCondition:./server/analysis/ FuzzExpand:./server/analysis/ FuzzMatchAgentRoute:./shared/api/; do \
	  f=$${spec%%:*}; p=$${spec#*:}; echo "fuzz $$f ($$p)"; \
	  $(GO) test -run XXX -fuzz "^$$f\$$" -fuzztime $${FUZZTIME:-30s} $$p; \
	done

bench: deps ## switch and revert timings on a real systemd node; publish-to-pulled for 10 and 100 agents in-process (~7 min); writes test/reports/switch-bench.md and mesh-bench.md
	SLIPWAY_E2E=1 $(GO) test -run XXX -bench BenchmarkSwitch -benchtime 11x -timeout 30m ./test/e2e/
	$(GO) test -run XXX -bench BenchmarkPublishToPulled -benchtime 1x -timeout 20m ./test/meshbench/


.PHONY: bench-audit bench-store
bench-audit: ## 10,000 refused requests with 900 KB paths against a real slipway-server: store.db growth and RSS (~5 min; figures in the test log, recorded in test/reports/audit-bench.md)
	SLIPWAY_AUDITFLOOD=1 $(GO) test -count=1 -v -timeout 30m -run TestAuditFlood ./test/auditflood/

bench-ui: deps ## the dashboard's fleet page in headless chromium at 1,000 and 10,000 enrolled nodes (SLIPWAY_UI_BENCH_SIZES): time to first render (~3 min); writes test/reports/ui-bench.md (not part of make test)
	SLIPWAY_UI_BENCH=1 $(GO) test -count=1 -v -timeout 30m -run '^TestFleetPageRender$$' ./test/dashboard/

bench-store: ## the bbolt store: concurrent Txn writers (group commit) and Put with 10,000 watchers (recorded in test/reports/store-bench.md)
	$(GO) test -run XXX -bench . -benchtime 5000x -count 3 ./server/store/boltstore/

.PHONY: soak crash-soak fleet-soak
soak: crash-soak fleet-soak ## long randomised reliability runs on real systemd nodes (not part of make test)

crash-soak: deps ## slipway-agent SIGKILLed at a random moment of a switch, revert or rollback, then recovered, 100 times on one node (~10 min; SLIPWAY_SOAK_ITERATIONS, SLIPWAY_SOAK_SEED); writes test/reports/crash-soak.md
	SLIPWAY_E2E=1 SLIPWAY_SOAK=1 $(GO) test -count=1 -timeout 60m -run '^TestCrashSoak$$' -v ./test/e2e/ 2>&1 | tee /tmp/slipway-crash-soak.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

fleet-soak: deps ## four real nodes, a release every 20 s (20% bad), random agent SIGKILLs and server restarts, for SLIPWAY_FLEET_SOAK_DURATION (default 30m; SLIPWAY_SOAK_SEED); writes test/reports/soak.md
	SLIPWAY_E2E=1 SLIPWAY_SOAK=1 $(GO) test -count=1 -timeout $${SLIPWAY_FLEET_SOAK_TIMEOUT:-90m} -run '^TestFleetSoak$$' -v ./test/e2e/ 2>&1 | tee /tmp/slipway-fleet-soak.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

FLEET_SIZES ?= 1000,10000
FLEET_IDLE  ?= 60s
FLEET_FLAGS ?=
bench-fleet: ## simulated agents (FLEET_SIZES, default 1,000 and 10,000) against a real slipway-server: deploys, errors, reverts, CPU, memory (~20 min); writes test/reports/fleet-bench.md (not part of make test)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./test/cmd/slipway-server-pprof ./test/cmd/slipway-fleetsim
	$(BIN)/slipway-fleetsim -server $(BIN)/slipway-server-pprof -pprof -sizes $(FLEET_SIZES) -idle $(FLEET_IDLE) -out test/reports/fleet-bench.md $(FLEET_FLAGS)

demo: deps build ## a server and N real systemd nodes: a release rolled out, a bad release reverted
	./test/demo/run.sh

fresh-check: ## .ci/run on a bare Debian 12 root (debootstrap, only Go added) as its root (pivot_root): proves a fresh machine needs nothing else (~25 min on a quiet 2-core machine, longer under load)
	./test/fresh/run.sh

demo-down: ## stop the demo's nodes and server
	./test/demo/down.sh

clean:
	rm -rf $(BIN) $(CURDIR)/dist
