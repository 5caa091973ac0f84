# The two commands a fresh machine needs (see README):
#   make demo   - set up, then run the whole pipeline end to end on the embedded defaults
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
NAME ?=

.PHONY: setup demo test test-unit test-integration bench lint wordnet clean help

help:
	@echo "make demo   - run the pipeline end to end on the demo config (local Ray, ./y9k-data, ./mlflow.db)"
	@echo "make test   - run the test suite (unit + integration)"
	@echo "make bench [NAME=wordtree] - run benchmarks, results in tests/benchmarks/results/"
	@echo "make lint   - ruff"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, alone: the pin resolves to the machine's CPU wheel (2.13.0+cpu; on a GPU machine the
# CUDA build). Resolved together with the project, pip picks the index's CUDA build instead; the
# second install then finds torch==2.13.0 satisfied and keeps it.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet "torch==2.13.0" -e '.[dev]'
	@$(PY) -c "import torch; v = torch.__version__; '+cpu' in v or torch.cuda.is_available() or \
		print(f'warning: torch {v} is a CUDA build on a machine without a GPU (several GB); a CPU wheel of torch==2.13.0 is enough here')"
	@touch $(STAMP)

setup: $(STAMP)
	$(VENV)/bin/y9k wordnet

demo: setup
	$(PY) pipelines/full.py --config pipelines/configs/demo.yaml

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(VENV)/bin/pytest tests/integration $(PYTEST_ARGS)

bench: setup
	$(PY) tests/benchmarks/run.py $(NAME)

lint: $(STAMP)
	$(VENV)/bin/ruff check yolo_core wordtree_build pipelines tests

clean:
	rm -rf y9k-data mlruns mlflow.db .pytest_cache
