# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: venv sysdeps demo test test-slow test-slurm lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

sysdeps:
	bash tests/sysdeps.sh

demo: venv sysdeps
	$(BIN)/fe-train demo --out demo_out

test: venv sysdeps
	$(BIN)/python -m pytest -q --durations=40 -m "not slow" tests

test-slow: venv sysdeps
	$(BIN)/python -m pytest -q -m slow tests

test-slurm: venv sysdeps   # the real-Slurm tests alone, both tiers (as root)
	$(BIN)/python -m pytest -q -m slurm tests

lint: venv
	$(BIN)/ruff check fe_train tests

clean:
	rm -rf demo_out runs .pytest_cache
