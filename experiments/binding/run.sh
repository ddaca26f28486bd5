#!/usr/bin/env bash
# Two tries at the binding failure of two-object prompts (experiments/BINDING.md), each against the
# shipped model on the same 256 held-out captions. About 2 hours on a 2-core CPU:
#   1. adapter.yaml: shapes64-minilm with text.adapter_layers 2, 4000 steps from scratch (~83 min);
#   2. share.yaml: the shipped model fine-tuned 1500 steps on 80% two-object scenes (~27 min).
# Both train on the shipped model's autoencoder, written out of the package first. Rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/binding}
HERE=experiments/binding
bash benchmarks/shipped_autoencoder.sh "$OUT/autoencoder"
$PY -m ldmkit.cli train --config $HERE/adapter.yaml --autoencoder "$OUT/autoencoder" --out "$OUT/adapter" --resume --no-progress
$PY -m ldmkit.cli train --config $HERE/share.yaml --autoencoder "$OUT/autoencoder" --init ldmkit/pretrained/shapes64 \
  --out "$OUT/share" --resume --no-progress
$PY experiments/two_objects.py --out "$OUT/reports" --num-images 256 --title "Two-object prompts: two tries at binding" \
  --row shipped-8k=ldmkit/pretrained/shapes64@4 --row adapter-4k="$OUT/adapter"@4 --row share0.8-ft="$OUT/share"@4 \
  --results experiments/BINDING.md --note "$(cat $HERE/NOTE.md)"
