# The two commands of the README:
#   make demo   runs the main job end to end on embedded defaults
#   make test   installs everything it needs, lints, type-checks and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo devstack test lint typecheck unit integration bench clean install tools

# The API simulator is its own distribution (simulator/pyproject.toml), kept out of the
# product wheel; the tests, the devstack, the demo and the benchmarks need it.
$(STAMP): pyproject.toml simulator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e ./simulator
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m devstack.demo

# broker + registry + API simulator for use by hand; prints the export lines; Ctrl-C stops
devstack: $(STAMP)
	$(BIN)/python -m devstack

# helm, promtool and kubernetes-validate for the chart and alert-rule tests
tools: $(STAMP)
	VENV=$(VENV) bash scripts/install-tools.sh

lint: $(STAMP)
	$(BIN)/ruff check producer simulator devstack tests benchmarks
	$(BIN)/ruff format --check producer simulator devstack tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck tools
	$(BIN)/pytest

# pure tests: no broker and no downloaded tool (helm, promtool), so no network either
unit: $(STAMP)
	$(BIN)/pytest -m "unit and not tools"

integration: $(STAMP)
	$(BIN)/pytest -m integration

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info simulator/build simulator/*.egg-info .pytest_cache .mypy_cache .ruff_cache
