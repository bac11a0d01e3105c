# Every target works on a fresh machine: the virtualenv is created on demand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench rules-doc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make run`: one foreground command; Ctrl-C stops every process it started.
# Processes (cds-service commands) started side by side by cds_service.runner:
RUN_COMMANDS ?= serve mllp
run: export CDS_AUTH ?= off
run: export CDS_DATABASE_URL ?= sqlite:///$(CURDIR)/var/cds_service.db
run: $(STAMP)
	@if [ "$$CDS_AUTH" = off ]; then echo "warning: CDS_AUTH=off: requests are not authenticated (local use only)" >&2; fi
	$(BIN)/cds-service migrate
	exec $(BIN)/python -m cds_service.runner $(RUN_COMMANDS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check cds_service tests bench
	$(BIN)/ruff format --check cds_service
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_evaluate.py
	$(BIN)/python bench/bench_http.py
	$(BIN)/python bench/bench_slow.py

rules-doc: $(STAMP)
	$(BIN)/cds-service rules --format md > docs/rules.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
