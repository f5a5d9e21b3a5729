# Two commands do all set-up: `make serve` (install + start the service) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000
# Beyond 1,024 open connections new requests get a 503, so idle or slow clients cannot use up the
# process's file handles; on shutdown, requests in flight get up to 60 s to be answered.
UVICORN_LIMITS ?= --limit-concurrency 1024 --timeout-graceful-shutdown 60

.PHONY: serve test install install-dev lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) $(UVICORN_LIMITS)

test: install-dev
	$(BIN)/python -m training fetch imagenet  # the ImageNet weights its tests compare against
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check app training benchmarks tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
