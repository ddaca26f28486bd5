"""A training run retraces: the first steps of both stages trained again from scratch log the losses the
reference run logged there (training is seeded and its learning rate depends on the step alone, so a
run's first steps do not depend on its length). experiments/retrace.py checks this on the shipped model's
run (experiments/SHAPES64_RETRACE.md)."""

from __future__ import annotations

import csv

import pytest

from ldmkit.cli import main


def losses(log) -> dict[int, float]:
    with open(log) as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


def train(out, steps: int, autoencoder) -> None:
    assert main(["train-autoencoder", "--preset", "tiny", "--out", str(out / "autoencoder"), "--steps", str(steps),
                 "--no-progress"]) == 0
    assert main(["train", "--preset", "tiny", "--autoencoder", str(autoencoder or out / "autoencoder"),
                 "--out", str(out / "model"), "--steps", str(steps), "--no-progress"]) == 0


@pytest.mark.slow
def test_a_rerun_of_the_first_steps_logs_the_reference_losses(tmp_path):
    reference, rerun = tmp_path / "reference", tmp_path / "rerun"
    train(reference, 30, None)  # the reference runs longer than the rerun
    train(rerun, 20, reference / "autoencoder")  # the diffusion stage on the reference's autoencoder: stages apart
    for stage in ("autoencoder", "model"):
        before, again = losses(reference / stage / "log.csv"), losses(rerun / stage / "log.csv")
        assert sorted(again) == [10, 20], stage
        for step, loss in again.items():
            assert loss == pytest.approx(before[step], rel=1e-4), (stage, step)
