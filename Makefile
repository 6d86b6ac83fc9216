# acklog: two commands on a fresh machine — `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# `make run` installs what running needs (the package and its dependencies); every target that
# checks or measures adds the test extras on top (pytest, linters, browsers' driver...)
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench soak clean mutate

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# projection shards for the machine (docs/operations.md, "Projection shards"): one per core up
# to 4 on more than 2 cores, else 1; ACKLOG_PROJECTOR_SHARDS in the environment wins
CORES := $(shell nproc 2>/dev/null || echo 1)
SHARDS := $(shell c=$(CORES); if [ "$$c" -gt 2 ]; then [ "$$c" -lt 4 ] && echo "$$c" || echo 4; else echo 1; fi)

run: $(RUN_STAMP)
	ACKLOG_PROJECTOR_SHARDS=$${ACKLOG_PROJECTOR_SHARDS:-$(SHARDS)} $(VENV)/bin/acklog serve $(ARGS)

# lint-imports: the layout's contracts in pyproject.toml ([tool.importlinter]; docs/design.md)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

soak: $(STAMP)
	ACKLOG_SOAK=$${ACKLOG_SOAK:-10} $(PY) -m pytest -s -q tests/service/ingest/test_faults.py tests/service/ingest/test_hostile.py tests/service/ingest/test_edge.py tests/service/runtime/test_roles.py

# Mutation testing (slow, not in CI): mutmut over the functions of each group of
# tests.support.mutation.py (GROUP=message_state|auth|ingest_503|eventstore|all), then the module-level
# tables (rank, status tables); scores and survivors with `python -m tests.support.mutation report`.
GROUP ?= all
mutate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,mutate]'
	$(PY) -m tests.support.mutation tables
	$(PY) -m tests.support.mutation run $(GROUP)
	$(PY) -m tests.support.mutation report

# wrk (Debian package) and py-spy are optional: installed best-effort, the bench falls back to
# its own load generator and skips profiles without them. ARGS="--quick" for a smoke test.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq wrk >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } || \
	  echo "bench: wrk not installed; load comes from python -m bench.loadgen"
	@test -x $(VENV)/bin/py-spy || $(PY) -m pip install --quiet py-spy >/dev/null 2>&1 || \
	  echo "bench: py-spy not installed; no profiles"
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
