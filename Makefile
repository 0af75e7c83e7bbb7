# Hydra — developer entry points. See deploy/local/README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

SERVICES := deploy/local/services.sh
# Extra arguments for `swift test`, e.g. make test SWIFT_TEST_FLAGS='--filter RouterTests'
SWIFT_TEST_FLAGS ?=
# Extra arguments for `swift build`
SWIFT_BUILD_FLAGS ?=

.PHONY: all deps build test check-ops demo pipeline-demo browser-test clean-local

all: build

## deps: install missing Debian packages (redis-server, postgresql, lib*-dev, pkg-config)
deps:
	$(SERVICES) deps

## build: debug build of hydra and hydra-agent
build:
	swift build $(SWIFT_BUILD_FLAGS)

## test: unit + integration tests against a private Redis/PostgreSQL (instance "test"),
## which are stopped afterwards also when tests fail; the exit status is swift test's.
test: deps check-ops
	@trap '$(SERVICES) stop test >&2 || true' EXIT; \
	$(SERVICES) start test >/dev/null; \
	source .hydra-local/test/env; \
	export HYDRA_TEST_REDIS_URL="$$HYDRA_REDIS_URL"; \
	export HYDRA_TEST_DATABASE_URL="$$HYDRA_DATABASE_URL"; \
	echo "make test: HYDRA_TEST_REDIS_URL=$$HYDRA_TEST_REDIS_URL HYDRA_TEST_DATABASE_URL=$$HYDRA_TEST_DATABASE_URL"; \
	swift test $(SWIFT_TEST_FLAGS)

## check-ops: systemd units (verify + security), Prometheus config/rules/alert tests, Grafana dashboard;
## installs systemd and prometheus (for promtool and the scrape test) when missing
check-ops:
	deploy/ci/check-units.sh
	deploy/ci/check-prometheus.sh
	deploy/ci/check-grafana.sh

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
