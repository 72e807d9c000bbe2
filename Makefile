# The two commands of the README: `make reproduce [PROFILE=smoke|cpu|t4|paper]` and `make test`.
PYTHON  ?= python3
PROFILE ?= smoke
STAGES  ?= teacher,distill,glue,imdb_squad,latency
ARGS    ?=
BOOK     = jupyter-book build book/ -W --keep-going

.PHONY: install reproduce stages book test clean-smoke gpu-check gpu-run

# torch first, pinned to the wheel this machine kind ships, so pip never picks a multi-GB CUDA build here;
# an existing torch (Colab's, yours) is kept as it is. requirements-dev.txt = requirements.txt (the runtime, all a
# Colab notebook installs) + requirements-book.txt (book, pipeline) + pytest.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	@$(PYTHON) -m pip install -q -r requirements-dev.txt

# every stage of a profile, in order, then the book
reproduce: install stages book

stages:
	$(PYTHON) -m lib.pipeline --profile $(PROFILE) --stages $(STAGES) $(ARGS)

book:
	$(BOOK)
	@echo "book: _build/html/index.html"

# the test suite (offline: the hub is never contacted), then the book with warnings as errors
test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest
	$(BOOK)

# the GPU check (under 5 min, offline, random-init BERT-base): results/gpu-check/<gpu>.json; ARGS=--cpu: CPU dry run
gpu-check:
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) scripts/gpu_check.py $(ARGS)

# on one lent GPU (H200 class): gpu-check, then the gpu profile, ~10 min, elapsed time per step; writes
# results/gpu-check/<gpu>.json and results/gpu/. ARGS="--cpu [--out DIR]": the CPU dry run on tiny shapes (tests do)
gpu-run:
	$(PYTHON) scripts/gpu_run.py $(ARGS)

clean-smoke:
	rm -rf build/smoke-hub runs/smoke
