#!/usr/bin/env bash
# Binding guidance (experiments/BINDING_GUIDANCE.md): the shipped model without `--binding`, with `--binding 0.3
# --binding-candidates 1` (the guidance alone), with `--binding 0.3` (the guidance, and the best of two
# starting noises) and with the best of three, on the 1024 held-out captions of benchmarks/SHAPES64.md. No training;
# about 30 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/binding}
$PY experiments/two_objects.py --out "$OUT/reports-guidance-1024" --num-images 1024 --title "Two-object prompts: binding guidance" \
  --row shipped=ldmkit/pretrained/shapes64@4 --row shipped-binding=ldmkit/pretrained/shapes64@4@0.3@1 \
  --row shipped-binding-best2=ldmkit/pretrained/shapes64@4@0.3@2 --row shipped-binding-best3=ldmkit/pretrained/shapes64@4@0.3@3 \
  --results experiments/BINDING_GUIDANCE.md --note "$(cat experiments/binding/NOTE_GUIDANCE.md)"
