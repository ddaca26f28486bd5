#!/usr/bin/env bash
# Colour words read by their colour (text.colour_lexicon, ldmkit.text.colour_words): 1500-step fine-tunes of the
# shipped model on the broad caption grammar with the lexicon in each mode (add.yaml, replace.yaml; dropout.yaml: add,
# with half the training captions' colour names hidden from the text encoder; replace_noun.yaml: replace, and each
# colour also on the tokens of its noun), against the
# same fine-tune without it (experiments/grounded_finetune/control.yaml), each measured with the shipped model on
# the same 512 held-out scenes told in the templates, the seen grammar and the unseen grammar (no binding
# guidance). Resumable: training resumes from its newest checkpoint, and a measurement whose JSON exists is kept.
# The dropout run is also trained on to 3000 steps (runs/colour-lexicon-dropout-3000).
#   bash experiments/colour_lexicon/run.sh   (runs/colour-lexicon-{add,replace,dropout,replace-noun}, runs/gft-control;
#   ~3 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/shipped_autoencoder.sh runs/shipped-ae
declare -A CONFIGS=([runs/gft-control]=experiments/grounded_finetune/control.yaml
                    [runs/colour-lexicon-add]=experiments/colour_lexicon/add.yaml
                    [runs/colour-lexicon-replace]=experiments/colour_lexicon/replace.yaml
                    [runs/colour-lexicon-dropout]=experiments/colour_lexicon/dropout.yaml
                    [runs/colour-lexicon-replace-noun]=experiments/colour_lexicon/replace_noun.yaml)
RUNS="runs/gft-control runs/colour-lexicon-add runs/colour-lexicon-replace runs/colour-lexicon-dropout
      runs/colour-lexicon-replace-noun"
for out in $RUNS; do
  .venv/bin/ldmkit train --config "${CONFIGS[$out]}" --init ldmkit/pretrained/shapes64 --autoencoder runs/shipped-ae \
    --out "$out" --resume --no-progress
done
# the dropout run trained on from its step 1500 to 3000, in a copy
if [ ! -d runs/colour-lexicon-dropout-3000 ]; then
  cp -r runs/colour-lexicon-dropout runs/colour-lexicon-dropout-3000
  rm -f runs/colour-lexicon-dropout-3000/eval-*   # the 1500-step model's measurements
fi
.venv/bin/ldmkit train --config experiments/colour_lexicon/dropout.yaml --init ldmkit/pretrained/shapes64 \
  --autoencoder runs/shipped-ae --out runs/colour-lexicon-dropout-3000 --resume --steps 3000 --no-progress
RUNS="$RUNS runs/colour-lexicon-dropout-3000"
for model in ldmkit/pretrained/shapes64 $RUNS; do
  dir=$([ "$model" = ldmkit/pretrained/shapes64 ] && echo runs/colour-lexicon-shipped || echo "$model")
  mkdir -p "$dir"
  for phrasing in templates seen unseen; do
    json="$dir/eval-$phrasing-512.json"
    # --as-written: the models alone (the shipped folder's known words would read the unseen words as known ones)
    [ -f "$json" ] || { .venv/bin/ldmkit eval generate --model "$model" --num-images 512 --phrasing "$phrasing" \
      --as-written --json "$json.part" --no-progress && mv "$json.part" "$json"; }
  done
done
.venv/bin/python experiments/colour_lexicon/table.py --out experiments/COLOUR_LEXICON.md \
  --note-file experiments/colour_lexicon/note.txt shipped=runs/colour-lexicon-shipped control=runs/gft-control \
  add=runs/colour-lexicon-add replace=runs/colour-lexicon-replace dropout=runs/colour-lexicon-dropout \
  "dropout, 3000 steps=runs/colour-lexicon-dropout-3000" replace-noun=runs/colour-lexicon-replace-noun
.venv/bin/python experiments/colour_lexicon/words.py $RUNS >> experiments/COLOUR_LEXICON.md
