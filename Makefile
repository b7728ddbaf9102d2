# The two commands: `make demo` (the main job, end to end) and `make test`
# (the whole suite). Both run the idempotent set-up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test lint unit integration bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m harness.demo

lint:
	$(VENV)/bin/ruff check backbone harness infra tests
	$(VENV)/bin/ruff format --check backbone harness infra tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/harness bench up
	$(VENV)/bin/harness bench perf
	$(VENV)/bin/harness bench sprint-close

clean:
	-$(VENV)/bin/harness down --all
	rm -rf .stacks
