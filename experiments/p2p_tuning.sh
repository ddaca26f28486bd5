#!/usr/bin/env bash
# Prompt-to-Prompt settings per kind of edit, chosen on tuning edits (seed 5000) that the measurement
# (benchmarks/prompt_to_prompt.py, seed 0) never uses. Each configuration runs the same edits from the
# same chosen sources (--source-cache); the table collects the Prompt-to-Prompt rows.
#
#     bash experiments/p2p_tuning.sh            # → experiments/P2P_TUNING.md (runs in runs/p2p-tuning/)
#
# GRID=colour tries only colour swaps, at cross 0.8 and 1.0 with self-attention from the source for longer
# and two blend thresholds; GRID=shape the shape swap's two thresholds at cross 0.6 and 0.8, and position at
# cross 0.2; GRID=size the size swap at cross 0.2 … 0.8 with self 0.2 and 0.4, and position at cross 0.1 … 0.4.
# MODEL names the model (default: the default shipped one); OUT and TABLE name the run folder and the table
# (one folder per model: the sources are cached there; several grids may share one).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/p2p-tuning}
TABLE=${TABLE:-experiments/P2P_TUNING.md}
COUNT=${COUNT:-24}
THREADS=${THREADS:-}
mkdir -p "$OUT"
common=(--count "$COUNT" --real-count 0 --seed 5000 --candidates 4 --rounds 2 --precision "${PRECISION:-fp32}"
        --no-baseline --source-cache "$OUT/sources.pt" ${THREADS:+--threads "$THREADS"} ${MODEL:+--model "$MODEL"})
run() {  # kind cross self threshold
    local file="$OUT/$1-c$2-s$3-t$4.md"
    [ -s "$file" ] || "$PY" benchmarks/prompt_to_prompt.py --kinds "$1" --cross-replace "$2" --self-replace "$3" \
        --blend-threshold "$4" "${common[@]}" --results "$file" > /dev/null
}
if [ "${GRID:-full}" = colour ]; then
    for s in 0.4 0.6 0.8; do
        for t in 0.3 0.5; do run colour 0.8 $s $t; done
    done
    run colour 1.0 0.6 0.5
elif [ "${GRID:-full}" = shape ]; then
    for c in 0.6 0.8; do
        for t in 0.3 0.5; do run shape $c 0.4 $t; done
    done
    run position 0.2 0.4 0.3
elif [ "${GRID:-full}" = size ]; then
    for c in 0.2 0.4 0.6 0.8; do
        for s in 0.2 0.4; do run size $c $s 0.3; done
    done
    for c in 0.1 0.4; do run position $c 0.4 0.3; done
    run position 0.2 0.4 0.3
else
    for c in 0.2 0.4 0.6 0.8; do
        for s in 0.2 0.4; do
            for t in 0.3 0.5; do run shape $c $s $t; done
        done
        run colour $c 0.4 0.3; run colour $c 0.4 0.5
        run size $c 0.4 0.3
        run position $c 0.4 0.3
    done
fi
CMD="bash experiments/p2p_tuning.sh"
[ "${GRID:-full}" = full ] || CMD="GRID=$GRID OUT=$OUT TABLE=$TABLE COUNT=$COUNT $CMD"
[ -z "${MODEL:-}" ] || CMD="MODEL=$MODEL $CMD"
"$PY" - "$OUT" "$COUNT" "$CMD" > "$TABLE" <<'PYEOF'
import re, sys
from pathlib import Path
out, count, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print("# Prompt-to-Prompt settings per kind of edit (tuning edits, seed 5000)\n")
print(f"{count} edits per kind and setting, on tuning edits that the measurement never uses (seed 5000; the "
      "measurement uses seed 0), each from the first of up to 8 starting noises whose source the judge finds "
      "right, the same sources for every setting. cross / self: the fractions of the steps with the source's "
      "cross- / self-attention; threshold: local blend's. Regenerate: `" + command + "`.\n")
print("| edit | cross | self | threshold | success | success, source right | unchanged object IoU | edited object IoU | PSNR outside (dB) | attributes kept |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(out.glob("*.md")):
    kind, c, s, t = re.match(r"(\w+)-c([\d.]+)-s([\d.]+)-t([\d.]+)\.md", f.name).groups()
    for line in f.read_text().splitlines():
        if "| Prompt-to-Prompt |" in line:
            cells = [x.strip() for x in line.strip("|").split("|")]
            print(f"| {cells[0]} | {c} | {s} | {t} | " + " | ".join(cells[2:]) + " |")
PYEOF
echo "wrote $TABLE"
