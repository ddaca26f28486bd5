#!/usr/bin/env bash
# The third try at binding (experiments/BINDING_ATTN16.md): attn16.yaml, shapes64-minilm with cross-attention at
# the 16x16 latent level too, 4000 steps from scratch on the shipped model's autoencoder (~34 min on a 2-core
# CPU), measured against the shipped model on the 256 held-out captions of BINDING.md. Rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/binding}
HERE=experiments/binding
bash benchmarks/shipped_autoencoder.sh "$OUT/autoencoder"
$PY -m ldmkit.cli train --config $HERE/attn16.yaml --autoencoder "$OUT/autoencoder" --out "$OUT/attn16" --resume --no-progress
$PY experiments/two_objects.py --out "$OUT/reports3" --num-images 256 --title "Two-object prompts: cross-attention at 16×16" \
  --row shipped-8k=ldmkit/pretrained/shapes64@4 --row attn16-4k="$OUT/attn16"@4 \
  --results experiments/BINDING_ATTN16.md --note "$(cat $HERE/NOTE_ATTN16.md)"
