# EVCharging Network — the two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed by these targets from a fresh clone: the venv, the Python packages and
# the Apache Kafka jars (Maven Central, into kafka/lib, git-ignored).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: install kafka-jars ocpp-go-cp test test-fast lint demo bench clean postgres

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

kafka/lib/.fetched: kafka/pom.xml
	mvn -q -B -f kafka/pom.xml dependency:copy-dependencies
	touch kafka/lib/.fetched

kafka-jars: kafka/lib/.fetched

# The independent OCPP 1.6J charge point (ocpp-go's example CP, a Go program) that EV_OCPP's
# tests and benchmark talk to; built from the Go module proxy into .cache/ocpp-go (git-ignored).
OCPP_GO_STAMP := .cache/ocpp-go/cp16.version

$(OCPP_GO_STAMP): scripts/build-ocpp-go-cp.sh
	scripts/build-ocpp-go-cp.sh
	touch $(OCPP_GO_STAMP)

ocpp-go-cp: $(OCPP_GO_STAMP)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

# The suite waits on real processes most of the time (measured: ~0.5 of a core busy on average),
# so four workers on two cores finish it in about a third of the time; each worker has its own
# broker, and every end-to-end test its own Kafka namespace.
TEST_WORKERS ?= 4

test: install kafka-jars ocpp-go-cp
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

test-fast: install
	$(VENV)/bin/pytest -q tests/unit

# The project's own PostgreSQL (Debian's `postgresql` package; see ops/postgres.py) for the demo:
# its data under .run/postgres (git-ignored); prints the URL to give Central and the Registry.
PG_PORT ?= 5433

postgres: install
	$(VENV)/bin/evcharging postgres start --data-dir .run/postgres --port $(PG_PORT)

# The demo runs a real OCPP charger too (ocpp-go's example CP): built here when Go is there;
# without Go the script says why, and the demo runs without the charger (it says so too).
demo: install kafka-jars
	@scripts/build-ocpp-go-cp.sh || echo "make demo: going on without the OCPP charger"
	$(VENV)/bin/evcharging demo $(DEMO_ARGS)

bench: install kafka-jars
	$(PIP) install -q -e '.[dev,bench]'
	$(VENV)/bin/python -m bench

clean:
	rm -rf .run .pytest_cache
