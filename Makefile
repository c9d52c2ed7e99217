# Crayfish Mesh — every target sets up what it needs (virtualenv, Kafka jars, models) first.
#   make run     the default benchmark (FFNN, embedded ONNX, baseline Kafka worker) -> runs/<stamp>/
#   make test    the test suite: import contracts, then tests/unit and tests/integration (real broker)
#   make test-fast  the fast group only (tests/unit: no broker, no server; ~20 s), the inner loop
#   make bench   harness/worker/codec benchmarks -> bench-results/<stamp>/
#   make mutate  mutation testing of the measurement code (>= 90 % killed; docs/mutation.md)
#   make protos  regenerate the Python stubs from protos/, lint them and check them against the
#                released contract with buf (lint, format, breaking)
#   make up      the native stack (Kafka, Jaeger, Scoring, kafka-worker, collector); make down|ps|logs

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
CACHE       := $(or $(CRAYFISH_CACHE_DIR),.cache)
KAFKA_STAMP := $(CACHE)/kafka/.fetched
EXPERIMENT  ?= experiments/default.yaml
STAMP       := $(shell date +%Y%m%d-%H%M%S)
OUT         ?= runs/$(STAMP)

.PHONY: setup run test test-fast test-deps mutate bench protos protos-check lint-protos kafka models clean help envs up down ps logs jaeger

help:
	@sed -n '1,9p' Makefile

$(VENV)/.installed: pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(KAFKA_STAMP): services/broker/pom.xml
	mkdir -p $(CACHE)/kafka/lib
	mvn -q -B -f services/broker/pom.xml \
	  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
	  -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(CACHE)/kafka/lib
	touch $@

kafka: $(KAFKA_STAMP)

setup: $(VENV)/.installed $(KAFKA_STAMP)

models: setup
	$(VENV)/bin/crayfish models build

run: setup
	$(VENV)/bin/crayfish run $(EXPERIMENT) --out $(OUT)
	@echo "results: $(OUT)/summary.json  (per-batch records: $(OUT)/batches.parquet)"

protos/node_modules/.installed: protos/package.json protos/package-lock.json
	cd protos && npm ci --silent --no-audit --no-fund
	touch $@

# The serving tests start real Triton, Ray Serve, TorchServe and TF Serving-protocol servers,
# each from its own environment (.envs/<name>, built once and cached).
envs: setup
	$(VENV)/bin/crayfish env build all

# What the tests need from the system besides Python: a JDK 17+ and Maven (the broker's jars, the
# Kafka Streams worker) and a headless Chromium (the report tests). Missing ones are installed with
# apt-get (Debian's openjdk-17-jdk-headless, maven, chromium) when make runs as root; otherwise make
# stops here with one line naming what to install. The tests never skip for a missing tool: they fail.
test-deps:
	@missing=""; \
	java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || missing="$$missing openjdk-17-jdk-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: installing$$missing (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "make test: missing$$missing: install them (Debian: sudo apt-get install$$missing) or run make test as root" >&2; \
	  exit 1; \
	fi

test: test-deps setup protos/node_modules/.installed envs jaeger
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The inner loop: the layer contracts and the fast group (tests/unit), no broker or server needed.
test-fast: $(VENV)/.installed protos/node_modules/.installed
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/unit

# Mutation testing of the analysis, the collector's batch table and the clock bound against their
# known-case tests; fails under 90 % killed or on a survivor docs/mutation.md does not explain.
mutate: $(VENV)/.installed
	$(PY) tools/mutate.py

bench: setup
	$(PY) -m benchmarks --out bench-results/$(STAMP)
	@echo "benchmark results: bench-results/$(STAMP)/bench.json"

protos: $(VENV)/.installed
	$(PY) tools/gen_protos.py
	$(MAKE) lint-protos

protos-check: $(VENV)/.installed
	$(PY) tools/gen_protos.py --check

# buf breaking: every change must stay wire-compatible with the released contract
# (protos/released/crayfish-v1.binpb, a `buf build` image of the last release).
lint-protos: protos/node_modules/.installed
	cd protos && npx buf lint && npx buf format -d --exit-code
	cd protos && npx buf breaking --against released/crayfish-v1.binpb

clean:
	rm -rf $(VENV) $(CACHE)/broker

# Per-service environments (.envs/<name>, from envs/<name>/requirements.txt), e.g. make env-triton
env-%: setup
	$(VENV)/bin/crayfish env build $*

# The native stack (services/stack, compose/native/stack.yaml; docs/stack.md): local processes on
# 127.0.0.1, state in .cache/stack/stack.json. `make logs SERVICE=kafka-worker FOLLOW=1`.
# Jaeger v2 is built once from the Go module proxy into .cache/jaeger/bin (long the first time).
JAEGER_BIN  := $(CACHE)/jaeger/bin/jaeger
STACK       := $(PY) -m services.stack

$(JAEGER_BIN): observability/jaeger/build.py | $(VENV)/.installed
	$(PY) observability/jaeger/build.py

jaeger: $(JAEGER_BIN)

up: setup jaeger
	$(STACK) up

down: $(VENV)/.installed
	$(STACK) down

ps: $(VENV)/.installed
	$(STACK) ps

logs: $(VENV)/.installed
	$(STACK) logs $(SERVICE) $(if $(FOLLOW),--follow)
