# Development checks. Every target runs from the repository root; `make all` is what a change
# must pass before review (see CONTRIBUTING.md).
PYTHON ?= python
RUFF ?= ruff
MYPY ?= mypy
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="tests/test_catalog.py -x -n 0"` (-n 0: no
# pytest-xdist workers, the quickest start for a few tests).
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help format lint typecheck test test-slow cards-check all

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

format:  ## rewrite the code: ruff's safe lint fixes, then ruff format (fixes may need reformatting)
	$(RUFF) check --fix .
	$(RUFF) format .

lint:  ## ruff lint and format check (changes nothing)
	$(RUFF) check .
	$(RUFF) format --check .

typecheck:  ## mypy over the files configured in pyproject.toml
	$(MYPY)

test:  ## the test suite as CI runs it (offline, CPU, no slow tests)
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m "not slow" -n auto $(PYTEST_ARGS)

test-slow:  ## the long parity checks only
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q -m slow $(PYTEST_ARGS)

cards-check:  ## model cards and the README zoo table match the catalog
	$(PYTHON) -m selfsup_zoo.cards --check

all: lint typecheck test  ## lint, typecheck and test
