# Two commands do everything from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := build/demo
SOURCES := pyproject.toml $(shell find docex_migrate alembic -name '*.py' -o -name '*.mako' -o -name '*.sql')

.PHONY: install demo test test-next-revision check bench lint clean

$(VENV)/.installed: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet ".[dev]"
	touch $@

install: $(VENV)/.installed  ## a virtualenv in .venv with docex-migrate (as a user gets it) and the dev extra: tests, ruff, mypy, squawk

demo: install  ## the main job on the embedded default: SQLite tenants under build/demo/storage
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	cd $(DEMO) && env -u DOCEX_CONFIG -u DOCEX_DATABASE_URL HOME=$(CURDIR)/$(DEMO) $(CURDIR)/$(BIN)/docex-migrate provision acme-corp globex-corp --verify
	cd $(DEMO) && env -u DOCEX_CONFIG -u DOCEX_DATABASE_URL HOME=$(CURDIR)/$(DEMO) $(CURDIR)/$(BIN)/docex-migrate upgrade --all-tenants
	cd $(DEMO) && env -u DOCEX_CONFIG -u DOCEX_DATABASE_URL HOME=$(CURDIR)/$(DEMO) $(CURDIR)/$(BIN)/docex-migrate status

test: install  ## the test suite; PostgreSQL tests need DOCEX_TEST_DATABASE_URL (see README)
	$(BIN)/python -m pytest

test-next-revision: install  ## the fast tests again, with a throwaway revision on top of the head (tests/next_revision.py)
	$(BIN)/python tests/next_revision.py

check: install  ## the CI migration checks on the configured database (SQLite default, or $$DOCEX_DATABASE_URL)
	mkdir -p build && cd build && env -u DOCEX_CONFIG HOME=$(CURDIR)/build $(CURDIR)/$(BIN)/docex-migrate check

bench: install  ## fleet benchmarks vs floors and the naive loop (minutes; not part of the tests)
	$(BIN)/python benchmarks/bench.py

LINTED := docex_migrate tests benchmarks alembic/env.py

lint: install  ## ruff (lint + format check) everywhere, mypy --strict on the package, one head
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/docex-migrate heads

clean:
	rm -rf $(VENV) build dist
