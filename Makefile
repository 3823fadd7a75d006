# Two commands on a fresh machine with Python 3.11 and pip: `make demo` and `make test`.
# Both create/update .venv when pyproject.toml or requirements/ change, and are no-ops otherwise.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gendiff-installed
REQS := pyproject.toml requirements/base.txt requirements/test.txt requirements/constraints.txt

.PHONY: demo test setup lint bench bench-setup clean-venv

setup: $(STAMP)

$(STAMP): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	# torch is pinned to the CPU wheel by the constraints file; everything else resolves against it.
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/test.txt
	# fastmri without its declared torchvision / pytorch-lightning (they break the CPU torch here).
	$(BIN)/pip install -q --no-deps fastmri==0.3.0
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gendiff demo --out demo_out --overwrite

test: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(BIN)/python -m pytest -q -m "not gpu" --timeout=900

lint: $(STAMP)
	$(BIN)/ruff check .

# Benchmark-only peers (d3rlpy for benchmarks/offline/learner_speed.py); never needed to run or test gendiff.
bench-setup: $(STAMP)
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/bench.txt
	$(BIN)/pip install -q --no-deps "d3rlpy==2.8.1"

clean-venv:
	rm -rf $(VENV)
