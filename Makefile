# `make test` and `make demo` work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test lint docs demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,examples,docs]'
	touch $@

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[examples]'
	touch $@

$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests examples benchmarks tools
	$(BIN)/ruff format --check src tests examples benchmarks tools
	$(BIN)/mypy --strict src

docs: $(DEV_STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

test: lint docs
	$(BIN)/python -m pytest -q

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/core.py
	$(BIN)/python benchmarks/compare.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/saga.py
	$(BIN)/python benchmarks/http_transport.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache site
