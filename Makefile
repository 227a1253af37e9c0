# The two quick-start commands: `make serve` and `make test`.
# Everything they need is installed by the targets below, idempotently.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: serve test test-fast lint install services bench clean

$(BIN)/huimages: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/huimages

services: install
	bash scripts/install-services

serve: install
	$(BIN)/huimages serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check huimages_wsgi tests bench scripts
	$(BIN)/lint-imports

# Every tier: unit, app (every backend combination), system (real servers, browser).
test: services lint
	$(BIN)/pytest -q --durations=30

# The edit loop: tests/unit and tests/app without servers, a browser or slow measurements (about 45 s).
test-fast: install
	$(BIN)/pytest -q -m fast

bench: install
	$(BIN)/python bench/run.py --ladder

clean:
	rm -rf $(VENV) .services build dist *.egg-info
