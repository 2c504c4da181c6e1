# Quickstart: `make demo` then `make test`. Both create .venv and install the pinned stack on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench-clean clean-outputs

$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve would pull the CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lifecycle run

test: install
	$(PY) -m pytest -q

bench-clean: install
	$(PY) -m benchmarks.clean_throughput
	$(PY) -m benchmarks.clean_scale neardup
	$(PY) -m benchmarks.clean_scale memory

clean-outputs:
	rm -rf data/clean data/tokens artifacts checkpoints metrics plots reports .dvc/cache dvc.lock
