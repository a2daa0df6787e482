"""The README's preset table matches the presets and their parameter counts."""

import re
from pathlib import Path

import pytest
import torch

import espnet_mamba

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
ROWS = dict(re.findall(r"^\| (\w+) \| .* \| ([\d.]+)M \|$", README, flags=re.M))


def test_readme_lists_every_preset():
    assert sorted(ROWS) == espnet_mamba.list_presets()


@pytest.mark.parametrize("preset", espnet_mamba.list_presets())
def test_readme_count(preset):
    with torch.device("meta"):
        model = espnet_mamba.build_model(preset)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(float(ROWS[preset]), abs=0.005)
