# Hydra — developer entry points. See deploy/local/README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

SERVICES := deploy/local/services.sh
# Extra arguments for `swift test`, e.g. make test SWIFT_TEST_FLAGS='--filter RouterTests'
SWIFT_TEST_FLAGS ?=
# Extra arguments for `swift build`
SWIFT_BUILD_FLAGS ?=
# Extra arguments for `hydra-dev chaos`, e.g. make chaos CHAOS_FLAGS='--jobs 10000 --json'
CHAOS_FLAGS ?=
# Seconds per fuzz target for `make fuzz`; FUZZ_LIBFUZZER=1 adds the libFuzzer run of the CSV parser
FUZZ_SECONDS ?= 60
FUZZ_LIBFUZZER ?= 0

.PHONY: all deps build agent-release man test check-ops runbook-test demo pipeline-demo browser-test clean-local chaos chaos-ci fuzz

all: build

## deps: install missing Debian packages (redis-server, postgresql, lib*-dev, pkg-config)
deps:
	$(SERVICES) deps

## build: debug build of hydra and hydra-agent
build:
	swift build $(SWIFT_BUILD_FLAGS)

## agent-release: hydra-agent as nodes run it (deploy/install-node.sh agent installs it from
## .build-static/release): release, the Swift runtime and Foundation linked statically, so nodes need
## no Swift toolchain (docs/benchmarks.md, "Agent footprint"). Its own scratch path: the static flag
## changes every compile command, and sharing .build with `swift build -c release` would rebuild all.
agent-release:
	swift build -c release --static-swift-stdlib --product hydra-agent --scratch-path .build-static $(SWIFT_BUILD_FLAGS)

## man: man pages for hydra, hydra-agent and hydra-fake in .build/man (swift-argument-parser's
## GenerateManual plugin; it builds the products in release mode first). install-node.sh installs them.
man:
	mkdir -p .build/man
	swift package --allow-writing-to-directory .build/man generate-manual --output-directory .build/man $(SWIFT_BUILD_FLAGS)

## test: unit + integration tests against a private Redis/PostgreSQL (instance "test"),
## (its short fuzz pass uses a fixed seed so that it is reproducible; `make fuzz` explores new seeds),
## which are stopped afterwards also when tests fail; the exit status is swift test's.
test: deps check-ops
	@trap '$(SERVICES) stop test >&2 || true' EXIT; \
	$(SERVICES) start test >/dev/null; \
	source .hydra-local/test/env; \
	export HYDRA_TEST_REDIS_URL="$$HYDRA_REDIS_URL"; \
	export HYDRA_TEST_DATABASE_URL="$$HYDRA_DATABASE_URL"; \
	echo "make test: HYDRA_TEST_REDIS_URL=$$HYDRA_TEST_REDIS_URL HYDRA_TEST_DATABASE_URL=$$HYDRA_TEST_DATABASE_URL"; \
	export HYDRA_FUZZ_SEED="$${HYDRA_FUZZ_SEED:-20261127}"; \
	swift test $(SWIFT_TEST_FLAGS)

## check-ops: systemd units (verify + security), Prometheus config/rules/alert tests, Grafana dashboard;
## installs systemd and prometheus (for promtool and the scrape test) when missing
check-ops:
	deploy/ci/check-units.sh
	deploy/ci/check-prometheus.sh
	deploy/ci/check-grafana.sh

## runbook-test: docs/operations.md's three-node install end to end on this machine: coordinator and three
## agents started from the real units' ExecStart= lines with credentials, environment file, state directory
## and notify socket laid out as systemd would; checks `hydra nodes` (3 up), a smoke batch, READY=1/WATCHDOG=1
## and the coordinator's /metrics; stops everything it started (instance "runbook")
runbook-test: deps build
	deploy/ci/runbook-test.sh --bin-dir "$$(swift build --show-bin-path)"

## chaos: kill, restart and partition a local cluster (instance "chaos") while it runs 2,000 sleep jobs;
## exits 1 on any lost or duplicated job (docs/chaos.md)
chaos: deps build
	"$$(swift build --show-bin-path)/hydra-dev" chaos $(CHAOS_FLAGS)

## chaos-ci: the short chaos run for CI: 300 jobs, every fault at least once, hostile traffic, pinned seed (about 45 s)
chaos-ci: deps build
	"$$(swift build --show-bin-path)/hydra-dev" chaos --jobs 300 --hostile --seed 7 $(CHAOS_FLAGS)

## fuzz: the parser fuzz tests (nvidia-smi CSV, node messages, batch files) for FUZZ_SECONDS each
fuzz: deps
	HYDRA_FUZZ_SECONDS=$(FUZZ_SECONDS) swift test $(SWIFT_BUILD_FLAGS) --filter FuzzTests
	@if [[ "$(FUZZ_LIBFUZZER)" == 1 ]]; then Fuzz/run.sh $(FUZZ_SECONDS); fi

## demo: build, then run the simulated three-node cluster on the sample batch
demo: deps build
	deploy/pipeline-demo.sh
	deploy/demo.sh

## pipeline-demo: build, then one small overnight night on the fake services; prints the report's path
pipeline-demo: deps build
	deploy/pipeline-demo.sh

## browser-test: headless Chromium against a simulated cluster's web console
## (needs the Debian package chromium); screenshot path printed as `artifact: PATH`
browser-test: deps build
	deploy/ci/browser-test.sh

## clean-local: stop every local instance and remove .hydra-local/ (and /tmp fallbacks)
clean-local:
	@shopt -s nullglob; \
	for d in .hydra-local/*/; do \
		$(SERVICES) destroy "$$(basename "$$d")" || true; \
	done; \
	rm -rf .hydra-local
