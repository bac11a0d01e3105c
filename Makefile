# Every target works on a fresh machine: the virtualenv is created on demand.
# `make run` installs the runtime dependencies only (fast); the test tools (pytest, ruff,
# mypy, hypothesis...) are added by the first `make test`, `make lint` or `make bench`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
TESTING := $(VENV)/.installed-test
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test lint bench rules-doc cards-doc clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# --no-compile: byte-compiling every installed module (fhir.resources ships thousands) took
# about half of the install; Python compiles the modules it imports on first use instead.
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(PIP) --no-compile -e .
	touch $(RUNTIME)

$(TESTING): $(RUNTIME)
	$(PIP) -e '.[test]'
	touch $(TESTING)

# `make run`: one foreground command; Ctrl-C stops every process it started.
# Processes (cds-service commands) started side by side by cds_service.runner:
RUN_COMMANDS ?= serve mllp
run: export CDS_AUTH ?= off
run: export CDS_DATABASE_URL ?= sqlite:///$(CURDIR)/var/cds_service.db
run: export CDS_SITE_MAPPINGS ?= $(CURDIR)/mappings/site/example.yaml
run: $(RUNTIME)
	@if [ "$$CDS_AUTH" = off ]; then echo "warning: CDS_AUTH=off: requests are not authenticated (local use only)" >&2; fi
	@$(BIN)/cds-service migrate
	@exec $(BIN)/python -m cds_service.runner $(RUN_COMMANDS)

# The /rules browser test needs Debian's chromium: installed here on a fresh machine (as root);
# elsewhere that test skips and says why.
test: $(TESTING)
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
	  { echo "installing chromium (Debian package) for the /rules browser test" >&2; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: chromium could not be installed: the /rules browser test will skip" >&2; }
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(TESTING)
	$(BIN)/ruff check cds_service tests bench
	$(BIN)/ruff format --check cds_service
	$(BIN)/mypy

bench: $(TESTING)
	$(BIN)/python bench/bench_evaluate.py
	$(BIN)/python bench/bench_http.py
	$(BIN)/python bench/bench_slow.py

rules-doc: $(RUNTIME)
	$(BIN)/cds-service rules --format md > docs/rules.md

cards-doc: $(RUNTIME)
	$(BIN)/cds-service cards > docs/cards.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
