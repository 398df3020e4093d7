# Accord: the two commands that matter are `make run` and `make test`.
# The venv is made from the system's own Python where it is 3.11 or newer and can make one (Debian's
# needs python3-venv), else from the first python3 on PATH; `make clean install PYTHON=...` chooses
# another. Distributions build theirs optimised (Debian's: profile-guided and link-time, the
# interpreter linked statically), a default pyenv build is neither, and under the load scenario the
# service spent some 15 % less CPU a request on Debian's (docs/production.md, "The interpreter").
PYTHON ?= $(if $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; print("yes" if sys.version_info >= (3, 11) else "")' 2>/dev/null),/usr/bin/python3,python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
export FLASK_APP := app

.PHONY: install install-test assets run test test-browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp files make `make run` quick the second time without hiding a changed pyproject.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed assets

install-test: $(VENV)/.installed-test assets

# GOV.UK Frontend comes from npm and is compiled here, never committed.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

app/static/build/accord.css: node_modules/.installed app/static/src/accord.scss
	npm run --silent build

assets: app/static/build/accord.css

run: install
	$(BIN)/accord db upgrade
	$(BIN)/accord seed demo --once
	$(BIN)/accord serve --port $(PORT)

# Every test, the browser journeys (tests/browser) included; CI sets CI=true so missing Chromium fails.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the browser journeys, for a quicker look at the pages.
test-browser: install-test
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules instance .pytest_cache
