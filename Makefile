# Thin wrapper: the real work is in CMake and scripts/. See README.md.
JOBS ?= 2
BUILD ?= build

.PHONY: all build run test bench fmt fmt-check clean clean-data setup tools traces web

all: build

setup:
	@scripts/setup

# Node tools pinned in package-lock.json (buf, protoc-gen-es) and the
# dashboard's dependencies (web/package-lock.json).
tools: node_modules/.mc-stamp web/node_modules/.mc-stamp
node_modules/.mc-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@
web/node_modules/.mc-stamp: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build: setup
	cmake -S . -B $(BUILD)/release -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD)/release -j$(JOBS)

# The dashboard's static build, served by the orchestrator (rebuilt only when
# its sources or the protos change).
WEB_SOURCES := $(shell find web/src web/public -type f 2>/dev/null | grep -v '/gen/') \
	web/package.json web/next.config.ts $(wildcard proto/*/v1/*.proto)
web: web/out/index.html
web/out/index.html: node_modules/.mc-stamp web/node_modules/.mc-stamp $(WEB_SOURCES)
	cd web && NEXT_TELEMETRY_DISABLED=1 npm run --silent build

# Starts the live system and prints where to open it (scripts/run).
run: setup build web
	@BUILD=$(BUILD) scripts/run

# Every test: Debug and asan builds (unit, integration, lint, fuzz corpus
# replay) and the clang libFuzzer build, each against a private nats-server
# and PostgreSQL started and stopped by scripts/with-services.
test: setup tools
	@JOBS=$(JOBS) BUILD=$(BUILD) scripts/test

bench: setup tools build
	@BUILD=$(BUILD) scripts/bench

# Re-records the golden traces (after a deliberate change in behaviour) and
# prints the decision diff against the old ones, so the change is reviewed.
traces: setup build
	@BUILD=$(BUILD) scripts/record-traces

fmt:
	@git ls-files '*.c' '*.h' | xargs clang-format -i
fmt-check:
	@git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD)

# Wipes the data of `make run` (NATS store, PostgreSQL cluster, traces).
clean-data:
	rm -rf .run
