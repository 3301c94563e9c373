# Two commands on a fresh machine (see README.md):
#   make quick   install everything, then run the main job (quick preset) into runs/quick
#   make test    install everything, then run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
PARAISITE_BENCH_DATA ?= $(abspath ../shared/data)
export PARAISITE_BENCH_DATA

.PHONY: install quick paper test benchmark clean

$(VENV)/.installed: pyproject.toml examples/paraisite-m3gnet/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch pinned to the CPU build that lies on local disk; an unpinned torch pulls a CUDA build
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e '.[test,crabnet,baselines]'
	# crabnet 2.0.8 declares Python < 3.11 and matbench 0.6 pins libraries that no longer build:
	# both run here, installed without their pins (their real needs are the `crabnet` extra)
	$(VENV)/bin/pip install --no-deps --ignore-requires-python crabnet==2.0.8
	$(VENV)/bin/pip install --no-deps matbench==0.6
	# the third-party example plugin (M3GNet backbone), installed like any other pip package
	$(VENV)/bin/pip install -e ./examples/paraisite-m3gnet
	touch $@

install: $(VENV)/.installed

quick: install
	$(VENV)/bin/paraisite-bench run --preset quick --workers 2 --out runs/quick

paper: install
	$(VENV)/bin/paraisite-bench run --preset paper --workers 2 --out runs/paper-megnet

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

benchmark: install
	$(VENV)/bin/python -m pytest benchmarks -m '' --benchmark-only -q

clean:
	rm -rf $(VENV) runs .pytest_cache
