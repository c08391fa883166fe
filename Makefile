# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates/reuses .venv, installs, runs the main job on the embedded benchmark
#   make test   -> creates/reuses .venv, installs, runs ruff + the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINT_PATHS := fastxai_jax tests experiments

.PHONY: install demo test test-slow lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[torch,dev,text]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastxai demo --out demo_out --workdir runs/demo

lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[torch,dev,bench]'
	$(PY) experiments/benchmarks/bench_mfaba.py --out runs/bench_mfaba.json
	$(PY) experiments/benchmarks/bench_insertion.py --out runs/bench_insertion.json
	$(VENV)/bin/fastxai train-target --workdir runs/target
	$(PY) experiments/benchmarks/bench_fex.py --target-workdir runs/target --out runs/bench_fex.json
	$(PY) experiments/benchmarks/bench_learned.py --target-dir runs/target --out runs/bench_learned.json

clean:
	rm -rf $(VENV) demo_out
