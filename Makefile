# The two commands: `make demo` (the main job, end to end) and `make test`
# (the whole suite). Both run the idempotent set-up first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test lint unit integration bench drills load fuzz clean distclean ci-health-publish

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m backbone_harness.demo $(DEMO_ARGS)

lint:
	$(VENV)/bin/ruff check backbone backbone_harness backbone_infra tests
	$(VENV)/bin/ruff format --check backbone backbone_harness backbone_infra tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: setup lint
	$(PY) -m pytest

# `make test` writes the CI health snapshot to build/status/ (ignored); this
# copies the last one into docs/status/, the committed copy, on purpose.
ci-health-publish:
	$(PY) -m backbone_harness.ci_health publish

bench: setup
	$(VENV)/bin/harness bench up
	$(VENV)/bin/harness bench perf
	$(VENV)/bin/harness bench sprint-close

# The status pages of the drills and of the load test, with their plots (PNG):
# docs/status/drills.md (+ drill-NAME-load.png) and docs/status/load.md.
drills: setup
	$(VENV)/bin/harness drill run all --up --hold 10 --load

load: setup
	$(VENV)/bin/harness load run --up --profile both

# A short coverage-guided fuzz run of the contract's readers (atheris; not in `make test`).
fuzz: setup
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[fuzz]"
	$(PY) scripts/fuzz_contract.py -runs=$${FUZZ_RUNS:-20000}

clean:
	-$(VENV)/bin/harness down --all
	rm -rf .stacks

# Everything the project made: the above, .venv, the PostgreSQL template cache,
# ~/.cache/backbone (Kafka jars, Pulumi CLI build, TimescaleDB oracle, images),
# and the Maven and Go module cache entries that set-up downloaded for it.
distclean: clean
	bash scripts/distclean.sh
