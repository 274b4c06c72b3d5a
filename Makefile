# Everything runs from the virtual environment in .venv/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

setup: $(STAMP)

# torch==2.13.0 sits on the same pip line so pip keeps the local CPU build instead of a CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install torch==2.13.0 -e '.[dev]'
	touch $(STAMP)

demo: setup tests/data/demo
	$(VENV)/bin/thresher run configs/demo.yaml

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) work out build *.egg-info
