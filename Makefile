# Two commands do all the set-up on a fresh machine with Python 3.11, Java 17 and Maven:
#   make demo    set up, then run the whole flow on the embedded default (files source)
#   make test    set up, then run the whole test suite
# Every target is idempotent: a rerun skips what is already done.

SHELL  := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := .stamps
PYTEST_ARGS ?=
# Two pytest workers, one Spark session each, a test module per worker at a time: a
# local Spark job keeps about one core busy (driver-side planning and Delta commits), so
# two workers use the machine's two cores.
PYTEST_WORKERS ?= 2

.PHONY: setup jars demo lint test test-fast bench serve kafka-up kafka-down clean-state clean help

help:
	@echo "make setup | demo | lint | test | test-fast | bench | kafka-up | kafka-down | clean-state | clean"

setup: $(STAMPS)/venv $(STAMPS)/redis jars

$(STAMPS)/tools:
	@command -v "$(PYTHON)" >/dev/null || { echo "tailor: Python 3.11 not found: install python3.11 or set PYTHON=/path/to/python3.11"; exit 1; }
	@"$(PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "tailor: $(PYTHON) is not Python 3.11: set PYTHON=/path/to/python3.11"; exit 1; }
	@command -v java >/dev/null || [ -x "$$JAVA_HOME/bin/java" ] || { echo "tailor: Java not found: install Java 17 (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"; exit 1; }
	@command -v mvn >/dev/null || { echo "tailor: Maven (mvn) not found: install Maven 3.8+ (apt-get install maven)"; exit 1; }
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: setup.py requirements.lock | $(STAMPS)/tools
	@test -x $(BIN)/python || "$(PYTHON)" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	@touch $@

# redis-server (and redis-benchmark, from redis-tools, which it depends on) from the
# operating system's packages, for the Redis serving store's tests and bench/export.py.
$(STAMPS)/redis:
	@if ! command -v redis-server >/dev/null; then \
	  command -v apt-get >/dev/null || { echo "tailor: redis-server not found: install Redis 7 from your system's packages"; exit 1; }; \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; \
	  else echo "tailor: redis-server not found: run make setup as root, or apt-get install redis-server"; exit 1; fi; \
	  echo "tailor: installing redis-server from the system's packages"; \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server || exit 1; \
	fi
	@mkdir -p $(STAMPS) && touch $@

# Debian's chromium and chromedriver, for the headless browser tests of the preference page
# and the dashboard (tests/api/test_preferences_browser.py, test_dashboard_browser.py, which fail where they are missing). make test installs them.
$(STAMPS)/chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  command -v apt-get >/dev/null || { echo "tailor: chromium not found: install chromium and chromium-driver"; exit 1; }; \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; \
	  else echo "tailor: chromium not found: run make setup as root, or apt-get install chromium chromium-driver"; exit 1; fi; \
	  echo "tailor: installing chromium and chromium-driver from the system's packages"; \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver || exit 1; \
	fi
	@mkdir -p $(STAMPS) && touch $@

jars: jars/spark/.complete jars/kafka-broker/.complete

jars/%/.complete: conf/jvm/%/pom.xml | $(STAMPS)/tools
	@rm -rf jars/$*
	mvn --quiet --batch-mode -f conf/jvm/$*/pom.xml dependency:copy-dependencies
	@touch $@

# make demo DATA=online-retail: the same flow on the UCI Online Retail replay, under
# var/online-retail so the two worlds' tables never mix.
DATA ?= synthetic
demo: setup
	$(BIN)/tailor run --env local --data $(DATA) $(if $(filter online-retail,$(DATA)),--set storage.root=var/online-retail)

LINTED := pipelines jobs api expectations tests bench

# ruff (lint and import order) over the code; mypy --strict over the pyspark-free parts
# that the API shares (pyproject.toml lists them).
lint: $(STAMPS)/venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

# The browser tests (the preference page, the dashboard's plots) need chromium; the demo does not.
test: setup $(STAMPS)/chromium lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The tests that start no Spark job and no broker (config, contracts, PII, generator, CLI, API,
# the serving stores against a real redis-server and moto), spread test by test over the two
# workers: none holds a Spark session, so the test, not the module, is the unit to balance.
test-fast: $(STAMPS)/venv $(STAMPS)/redis
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist load -m "not spark and not kafka and not slow" $(PYTEST_ARGS)

# Every benchmark at its measured size, one at a time (about an hour on 2 cores; not part
# of make test, which runs each at a tiny size), then the results table in README.
# BENCH_ARGS="--only merge features" picks some.
bench: setup
	$(BIN)/python -m bench.all $(BENCH_ARGS)

# The content API under gunicorn on api.bind (127.0.0.1:8080); keys from TAILOR_API_TOKENS.
serve: $(STAMPS)/venv
	$(BIN)/tailor serve --env local $(SERVE_ARGS)

kafka-up: setup
	$(BIN)/tailor kafka up

kafka-down:
	@if [ -x $(BIN)/tailor ]; then $(BIN)/tailor kafka down; fi

clean-state:
	rm -rf var

clean: kafka-down
	rm -rf var jars $(VENV) $(STAMPS) *.egg-info
