#!/usr/bin/env bash
# Train the grounded shapes64 preset and two ablations side by side on one GPU, each for as many steps as
# fit in TRAIN_S seconds (a run stopped at step K is the run with `--steps K`: the learning rate is
# constant after warm-up and every step's data and noise depend only on the step), pack them, distil a
# 4-step student from the grounded one, and measure each with benchmarks/grounding.py.
#
#   bash experiments/grounding_gpu/run.sh OUT TRAIN_S EVAL_S [DEVICE] [CHECKPOINT_EVERY] [EVAL_IMAGES]
#
# What comes back: OUT/summary.txt, OUT/results.tar.xz and OUT/<model>.tar.xz (.gz without xz) (each packed model folder,
# tokenizer.json left out: it is the MiniLM package's).
set -u
OUT=$1; TRAIN_S=$2; EVAL_S=$3; DEV=${4:-cuda}; CKPT=${5:-500}; IMAGES=${6:-1024}
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
W=runs/gpu
mkdir -p "$W" "$OUT"
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
say() { echo "[$(elapsed)s] $*" | tee -a "$W/summary.txt"; }
G=experiments/grounding_gpu
declare -A CFG=([grounded]=$G/grounded.yaml [strong]=$G/strong.yaml [ungrounded]=$G/ungrounded.yaml)
VARIANTS=${VARIANTS:-grounded strong ungrounded}  # a subset, for a short run
AE=${AE:-$W/ae}  # an autoencoder folder made beforehand, or the shipped model's, written here

PY=$PY bash benchmarks/shipped_autoencoder.sh "$AE" || { say "autoencoder export failed"; exit 1; }
say "autoencoder ready; $($PY -c 'import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())')"
for v in $VARIANTS; do
  $PY -m ldmkit train --config "${CFG[$v]}" --autoencoder "$AE" --out "$W/$v" --device "$DEV" --no-progress \
    --checkpoint-every "$CKPT" --keep-checkpoints 2 > "$W/$v.log" 2>&1 &
  echo $! > "$W/$v.pid"
done
alive() { kill -0 "$(cat "$W/$1.pid")" 2>/dev/null; }
sleep 45
for v in $VARIANTS; do
  alive "$v" || { say "$v died early:"; tail -20 "$W/$v.log" | tee -a "$W/summary.txt"; }
done
if ! alive grounded; then say "the grounded training failed"; cp "$W/summary.txt" "$OUT/"; exit 1; fi
while [ "$(elapsed)" -lt "$TRAIN_S" ] && { alive grounded || alive strong || alive ungrounded; }; do sleep 5; done
for v in $VARIANTS; do alive "$v" && kill "$(cat "$W/$v.pid")"; done
sleep 3
finalize() {  # the model folder of the newest checkpoint, packed as the shipped model is
  local v=$1 last k
  last=$(ls "$W/$v/checkpoints" 2>/dev/null | grep -E '^step_[0-9]+\.pt$' | sort | tail -1)
  [ -n "$last" ] || { say "$v: no checkpoint"; return; }
  k=$((10#$(echo "$last" | tr -dc 0-9)))
  $PY -m ldmkit train --config "${CFG[$v]}" --autoencoder "$AE" --out "$W/$v" --device "$DEV" --no-progress \
    --resume --steps "$k" >> "$W/$v.log" 2>&1 && $PY -m ldmkit.pretrained pack "$W/$v" "$W/packed/$v" >> "$W/$v.log" 2>&1 \
    && say "$v: $k steps, packed; last log line: $(tail -1 "$W/$v/log.csv")" || say "$v: finalize failed: $(tail -3 "$W/$v.log")"
}
for v in $VARIANTS; do finalize "$v" & done
wait

# a 4-step student of the grounded model, beside the measurements
if [ -d "$W/packed/grounded" ] && [ "${DISTILL:-1}" = 1 ]; then
  $PY -m ldmkit distill --config $G/grounded.yaml --teacher "$W/packed/grounded" --out "$W/lcm" \
    --device "$DEV" --no-progress --checkpoint-every "$CKPT" > "$W/lcm.log" 2>&1 &
  echo $! > "$W/lcm.pid"
fi
evals=""
for m in before=ldmkit/pretrained/shapes64 grounded=$W/packed/grounded strong=$W/packed/strong ungrounded=$W/packed/ungrounded; do
  [ -e "${m#*=}/unet.safetensors" ] || continue
  $PY benchmarks/grounding.py --model "$m" --device "$DEV" --work "$W/eval" --images "$IMAGES" \
    --phrasing-images $((IMAGES / 2)) --results "$W/GROUNDING-${m%%=*}.md" --no-progress > "$W/eval-${m%%=*}.log" 2>&1 &
  evals="$evals $!"
done
t_eval=$(( $(elapsed) + EVAL_S ))
while [ "$(elapsed)" -lt "$t_eval" ]; do
  running=0; for p in $evals; do kill -0 "$p" 2>/dev/null && running=1; done
  [ $running = 1 ] || { [ -f "$W/lcm.pid" ] && alive lcm || break; }
  sleep 5
done
for p in $evals; do kill "$p" 2>/dev/null; done
if [ -f "$W/lcm.pid" ] && alive lcm; then kill "$(cat "$W/lcm.pid")"; sleep 2; fi
last=$(ls "$W/lcm/checkpoints" 2>/dev/null | grep -E '^step_[0-9]+\.pt$' | sort | tail -1)
if [ -n "$last" ]; then
  k=$((10#$(echo "$last" | tr -dc 0-9)))
  $PY -m ldmkit distill --config $G/grounded.yaml --teacher "$W/packed/grounded" --out "$W/lcm" \
    --device "$DEV" --no-progress --resume --steps "$k" >> "$W/lcm.log" 2>&1 \
    && $PY -m ldmkit.pretrained pack "$W/lcm" "$W/packed/lcm" >> "$W/lcm.log" 2>&1 && say "lcm: $k steps, packed"
fi
for f in "$W"/eval-*.log; do say "$f:"; grep '^|' "$f" | tee -a "$W/summary.txt" > /dev/null; done
cat "$W"/eval-*.log | grep '^|' || true
if command -v xz > /dev/null; then Z="xz -T0"; X=xz; else Z=gzip; X=gz; fi
for v in $VARIANTS lcm; do  # the MiniLM tokenizer.json is the package's own: left out, copied back here
  [ -d "$W/packed/$v" ] && tar cf - --exclude=tokenizer.json -C "$W/packed" "$v" | $Z > "$OUT/$v.tar.$X"
done
tar cf - "$W/eval" "$W"/*.log "$W"/GROUNDING-*.md $(for v in $VARIANTS lcm; do echo "$W/$v/log.csv" "$W/$v/samples"; done) \
  2>/dev/null | $Z > "$OUT/results.tar.$X"
say "done; $(du -ch "$OUT"/*.tar.* | tail -1 | cut -f1) in $(ls "$OUT" | wc -l) files"
cp "$W/summary.txt" "$OUT/"
