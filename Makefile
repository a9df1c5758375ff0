# Two commands on a fresh machine with Python 3.11 and make:
#   make run    install into .venv and run the ingest pipeline on the bundled data (offline)
#   make test   install into .venv, check lint, formatting and types, run the whole test suite
# Both are idempotent: the install step reruns only when pyproject.toml or constraints.txt change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m pipelines run ingest

# Tests talk to loopback only: where we may make a private network namespace (root, as in
# CI) the whole suite runs inside one that has nothing but `lo`, so Ray, which binds to every
# interface, stays private. Elsewhere the Ray tests are skipped.
# Before the suite: lint and format (ruff), strict types (mypy, [tool.mypy] in pyproject.toml)
# and the docstring examples; any finding fails the run.
test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) tests/loopback_only.py $(PY) -m pytest -q tests/test_doctests.py
	$(PY) tests/loopback_only.py $(PY) -m pytest --ignore=tests/test_doctests.py $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pipelines .pytest_cache
