"""Shared fixtures: tiny models of every preset, cheap enough for CPU tests."""

import pytest
import torch

import espnet_mamba

# HuBERT's CNN kernels and strides (so the 400-sample receptive field and the 320-sample hop
# stay), with 32 channels instead of 512.
TINY_CNN = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2


def pytest_configure(config):
    # The tests run tiny models, which threads do not speed up; on a shared machine the
    # thread pool's synchronisation made each small op ~10x slower.
    torch.set_num_threads(1)


def tiny_overrides(preset: str) -> dict:
    """ModelConfig overrides that shrink ``preset`` but keep its layer type, causality and
    the presence of its FFN; dropout off, PyTorch ops."""
    overrides = dict(
        d_model=64, num_layers=2, heads=4, conv_layers=TINY_CNN, final_dim=32, num_classes=20,
        dropout=0.0, attention_dropout=0.0, dropout_input=0.0, ssm_impl="torch",
    )  # fmt: skip
    if espnet_mamba.load_config(preset).ffn_dim:
        overrides["ffn_dim"] = 128
    return overrides


@pytest.fixture
def tiny_model():
    """Factory: ``tiny_model(preset, **overrides)`` -> a seeded tiny model in eval mode."""

    def build(preset: str, seed: int = 0, **overrides) -> espnet_mamba.MambaHuBERTForPretraining:
        torch.manual_seed(seed)
        model = espnet_mamba.build_model(preset, **{**tiny_overrides(preset), **overrides})
        return model.eval()

    return build


@pytest.fixture
def isolated_ctc_corpus():
    """Undo what running from an s3prl clone does to the process: the clone's directory added to
    ``s3prl.downstream.ctc.__path__`` and its ``corpus`` modules imported. Without this, the
    first test's "clone" would serve every later test's corpus imports."""
    import sys

    import s3prl.downstream.ctc as ctc

    saved_path = list(ctc.__path__)
    yield
    ctc.__path__[:] = saved_path
    for name in [n for n in sys.modules if n.startswith("s3prl.downstream.ctc.corpus")]:
        del sys.modules[name]
