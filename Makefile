# The two README commands (run, test) and lint. Each bootstraps .venv with pip when it is
# missing or older than pyproject.toml, so a fresh machine needs only Python 3.11+.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k seed -x"
PYTEST_ARGS ?=

.PHONY: run test test-slow lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

## run: the main job on the embedded Postgres: measure legacy and optimized, write the
## before/after report (RUN_ARGS="--quick" for the CI budget)
RUN_ARGS ?=
run: $(STAMP)
	$(BIN)/sixty run $(RUN_ARGS)

## test: the whole test suite against real Postgres
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## test-slow: the tests that wait out real timeouts (black holes, breaker resets, fuzzing
## every operation); .ci/run runs them after make test
test-slow: $(STAMP)
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

## lint: exactly what CI runs
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .sixty
