#!/usr/bin/env bash
# Write the shipped models' autoencoder (shapes64's and the default's are the same) out as an autoencoder folder, unless
# the folder is there already: `make shapes64-grounded` and the binding experiments (experiments/binding/)
# train their UNets on it. Usage: bash benchmarks/shipped_autoencoder.sh OUT_FOLDER
set -euo pipefail
PY=${PY:-.venv/bin/python}
if [ ! -f "$1/config.yaml" ]; then
  $PY -c "import sys
from ldmkit.autoencoder.folder import save_autoencoder
from ldmkit.model import LatentDiffusion
from ldmkit.pretrained import shipped_model
save_autoencoder(LatentDiffusion.load(shipped_model()).autoencoder.float(), sys.argv[1])" "$1"
fi
