# Two commands do all set-up: `make serve` (install + start the service) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000

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
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

test: install-dev
	$(BIN)/python -m training fetch imagenet  # the ImageNet weights its tests compare against
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check app training benchmarks tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
