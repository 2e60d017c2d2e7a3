# The two commands a newcomer needs:
#   make demo   - the whole stack on embedded defaults (broker, router, worker pools, local
#                 model tiers, sample traffic, a summary of routes)
#   make test   - lint, types and the whole test suite against a real Kafka broker
# Both create the virtual environment they need. CI (.ci/run) calls `make test`.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck venv clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train,local]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/llm-router up

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: lint

test: venv lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/bench_classifier.py
	$(BIN)/python bench/bench_router.py
	$(BIN)/python bench/bench_worker.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var
