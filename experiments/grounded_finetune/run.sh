#!/usr/bin/env bash
# A grounded fine-tune of the shipped model on the CPU, then measured as the README's table measures the shipped
# model: 1024 held-out template captions without and with binding guidance (λ = 0.2). Resumable: training resumes
# from its newest checkpoint, and a measurement whose JSON exists is kept. Usage:
#   bash experiments/grounded_finetune/run.sh CONFIG OUT     (e.g. experiments/grounded_finetune/token_only.yaml runs/gft-token)
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=$1 OUT=$2
bash benchmarks/shipped_autoencoder.sh runs/shipped-ae
.venv/bin/ldmkit train --config "$CONFIG" --init ldmkit/pretrained/shapes64 --autoencoder runs/shipped-ae \
  --out "$OUT" --resume --no-progress
for binding in 0 0.2; do
  [ -f "$OUT/eval-binding$binding.json" ] || .venv/bin/ldmkit eval generate --model "$OUT" --num-images 1024 \
    --binding "$binding" --json "$OUT/eval-binding$binding.json.part" --no-progress
  [ -f "$OUT/eval-binding$binding.json.part" ] && mv "$OUT/eval-binding$binding.json.part" "$OUT/eval-binding$binding.json"
done
