# upkeeper — every target bootstraps what it needs (apt packages, the venv, Python deps).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt setup.py src/upkeeper/logs/_cut.c | cksum | cut -d' ' -f1)
# two workers (each starts its own services), a test file's tests in one worker (module fixtures start once);
# PYTEST_ARGS="-n 0" runs the suite in one process
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: all bootstrap system-deps venv demo test lint docs bench lock clean

all: test

system-deps:
	@bash scripts/ensure-system-deps.sh

# the versions in constraints.txt: a new release of a dependency never changes what CI tests unseen ('make lock')
$(STAMP): pyproject.toml constraints.txt setup.py src/upkeeper/logs/_cut.c
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

# byte-compile the source as a wheel install would (pip does it at install time): with
# PYTHONDONTWRITEBYTECODE set, every 'upkeeper' command would compile it again (~0.1 s)
bootstrap: system-deps venv
	@$(BIN)/python -m compileall -q src >/dev/null

demo: bootstrap
	$(BIN)/upkeeper demo

test: bootstrap
	@bash scripts/run-tests.sh $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

docs: venv
	$(BIN)/python -m upkeeper.docsgen

bench: bootstrap
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# constraints.txt from the newest releases pyproject.toml allows, resolved in a scratch venv; then run 'make test'
lock:
	@rm -rf .venv-lock && $(PY) -m venv .venv-lock
	@.venv-lock/bin/python -m pip install -q --upgrade pip
	@.venv-lock/bin/python -m pip install -q -e '.[dev]'
	@head -3 constraints.txt > constraints.txt.new
	@.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^upkeeper' >> constraints.txt.new
	@mv constraints.txt.new constraints.txt && rm -rf .venv-lock
	@echo "constraints.txt updated: run 'make test' before committing it"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
