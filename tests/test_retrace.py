"""benchmarks/retrace.py: training the first steps again from scratch logs the losses the reference run
logged there (training is seeded and its learning rate depends on the step alone)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ldmkit.cli import main


def _retrace():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "retrace.py"
    spec = importlib.util.spec_from_file_location("benchmark_retrace", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_rerun_of_the_first_steps_logs_the_reference_losses(tmp_path):
    reference = tmp_path / "reference"
    # the reference runs longer than the rerun: its first steps must not depend on its length
    assert main(["train-autoencoder", "--preset", "tiny", "--out", str(reference / "autoencoder"), "--steps", "30",
                 "--no-progress"]) == 0
    assert main(["train", "--preset", "tiny", "--autoencoder", str(reference / "autoencoder"),
                 "--out", str(reference / "model"), "--steps", "30", "--no-progress"]) == 0
    results = tmp_path / "RETRACE.md"
    retrace = _retrace()
    retrace.main(["--reference", str(reference), "--preset", "tiny", "--out", str(tmp_path / "rerun"),
                  "--ae-steps", "20", "--ldm-steps", "20", "--results", str(results)])
    text = results.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| autoencoder |", "| LDM |"))]
    assert [(r[0], r[1]) for r in rows] == \
        [("| autoencoder", "10"), ("| autoencoder", "20"), ("| LDM", "10"), ("| LDM", "20")]
    assert all(float(r[4].rstrip(" |")) < 1e-4 for r in rows), text
    assert "Regenerate: `python " in text
    with pytest.raises(SystemExit, match="no training log"):
        retrace.main(["--reference", str(tmp_path / "none"), "--preset", "tiny", "--out", str(tmp_path / "rerun"),
                      "--ae-steps", "10", "--ldm-steps", "10"])
