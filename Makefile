# kafka-gateway: `make run` (local Kafka + gateway) and `make test` work on a fresh machine:
# they install Debian packages (Java, Maven, kcat), the Python venv, and fetch Kafka with Maven.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command:debian-package pairs the project needs on the machine
SYSTEM_DEPS := java:openjdk-17-jre-headless mvn:maven kcat:kcat
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help install system-deps kafka run test lint typecheck docs docs-check unit integration bench fuzz flood clean

help:
	@echo "make run   - start a local 3-broker Kafka and the gateway with deploy/examples/acl-quota.yaml (bootstrap 127.0.0.1:9092)"
	@echo "make test  - lint, type-check and run every test against real Kafka"
	@echo "make bench - side-by-side benchmark, direct vs via the gateway"

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

install: system-deps $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

kafka: install
	$(BIN)/kafka-gateway local-kafka --download-only

run: kafka
	bash deploy/run-local.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

docs: install
	$(BIN)/python tools/gen_config_docs.py

docs-check: install
	$(BIN)/python tools/gen_config_docs.py --check

unit: install
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

integration: kafka
	$(BIN)/pytest tests/integration -q $(PYTEST_ARGS)

# The unit suite (CPU-bound, no Kafka) runs on two processes; the integration suite,
# whose Kafka clusters and gateways already use both cores, on one.
test: kafka lint typecheck docs-check
	$(BIN)/pytest tests/unit -q -rfE -n 2 $(PYTEST_ARGS)
	$(BIN)/pytest tests/integration -q -rfE $(PYTEST_ARGS)

# coverage-guided fuzzing of every decoder a session applies to client bytes (atheris);
# crashing inputs are saved in tests/fuzz/crashes/ and replayed by `make test`
FUZZ_SECONDS ?= 300
fuzz: install
	$(BIN)/python -m tests.fuzz.run fuzz --seconds $(FUZZ_SECONDS)

# the live flood test alone (100,000 mutated frames, as in `make test`): FLOOD_FRAMES=...
# to choose another size
FLOOD_FRAMES ?= 100000
flood: kafka
	FLOOD_FRAMES=$(FLOOD_FRAMES) $(BIN)/pytest tests/integration/test_flood.py -q -s -rfE $(PYTEST_ARGS)

bench: kafka
	$(BIN)/python tests/benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache *.egg-info
