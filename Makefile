# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# The oldest and newest supported Pythons, where pyenv has them (the newest patch release of each).
PYENV_VERSIONS ?= $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
OTHER_PYTEST_ARGS ?= tests
# The suite runs in random order (pytest-randomly; the seed is the summary's last line) on PYTEST_WORKERS processes
# (pytest-xdist); repeat an order with `--randomly-seed=N`; `PYTEST_WORKERS=0` runs in this one process.
PYTEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS))
OTHER_PYTHONS ?= $(foreach v,3.10 3.13,$(lastword $(sort $(wildcard $(PYENV_VERSIONS)/$(v).*/bin/python3))))

.PHONY: demo test lint bench test-other-pythons clean docs release-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The demo needs the package alone: no test toolchain.
$(DEMO_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $(DEMO_STAMP)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP) $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(PY) examples/quickstart.py

lint: $(STAMP)
	$(PY) -m ruff check ces_logging tests examples benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q $(PYTEST_PAR)

# The suite (no lint) in a venv per interpreter, .venv-3.10 and .venv-3.13; an absent one is skipped.
# A run that collects no test fails (pytest's exit 5 never passes as "fine").
test-other-pythons:
	@if [ -z "$(strip $(OTHER_PYTHONS))" ]; then echo "test-other-pythons: no Python 3.10 or 3.13 under $(PYENV_VERSIONS): skipped"; fi
	@set -e; for py in $(OTHER_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); venv=.venv-$$v; \
	  echo "== Python $$v ($$py) in $$venv"; \
	  [ -x $$venv/bin/python ] || { $$py -m venv $$venv && $$venv/bin/python -m pip install -q --upgrade pip; }; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    $$venv/bin/python -m pip install -q -e '.[test]' && touch $$venv/.installed; fi; \
	  rc=0; $$venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_PAR) $(OTHER_PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "Python $$v: pytest collected no test: the suite is broken there"; exit 1; fi; \
	  if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	done

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/run.py

# The documentation site, strictly: a broken link, anchor or reference (mkdocstrings) fails the build.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The sdist and the wheel built and checked, the wheel installed in a fresh venv, the demo and the CLI run from it.
# Its tools (build, twine) go in a venv of its own, not in .venv (see the script).
release-check:
	bash .ci/release-check $(PYTHON)

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .mypy_cache .ruff_cache build *.egg-info test-artifacts site
