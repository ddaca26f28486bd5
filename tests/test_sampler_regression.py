"""The shipped model draws what it drew before the samplers were rebuilt over one σ grid: every sampler
setting of `tests/sampler_reference.py` (pipeline calls, Karras σ, image-to-image, binding guidance's
stop-and-continue, the consistency student) within 1/255 per pixel of the PNGs the old code wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.sampler_reference import render

REFERENCE = Path(__file__).parent / "data" / "sampler_reference"


@pytest.fixture(scope="module")
def rendered():
    return render()


def test_every_sampler_setting_draws_what_it_drew_before(rendered):
    assert sorted(rendered) == sorted(p.stem for p in REFERENCE.glob("*.png"))
    for name, array in rendered.items():
        before = np.asarray(Image.open(REFERENCE / f"{name}.png").convert("RGB")).astype(int)
        diff = np.abs(array.astype(int) - before).max()
        assert diff <= 1, f"{name}: {diff}/255 apart"
