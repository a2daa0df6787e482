"""Make s3prl 0.4.18 import and run on torch/torchaudio 2.11 and huggingface_hub >= 1.

s3prl's last release predates torchaudio 2.9 and huggingface_hub 1.0. :func:`apply` patches
the imported modules in memory (never the installed files) and must run before s3prl is
imported (``import s3prl_upstream`` does it). Each shim is installed only where the
installed library lacks the feature:

* ``torchaudio.set_audio_backend``: removed in torchaudio 2.9; s3prl calls it at import time
  (several upstreams) and in ``run_downstream.main``. Backends are gone, so a no-op.
* ``torchaudio.sox_effects``: removed in torchaudio 2.9; the KS, QbE and ASV datasets import
  it. Replaced by :mod:`s3prl_upstream.sox_effects`.
* ``torchaudio.load``: needs TorchCodec since torchaudio 2.9; replaced by the soundfile
  loader :func:`s3prl_upstream.audio_io.load` when a probe load fails.
* ``huggingface_hub.HfFolder`` / ``Repository``: removed in huggingface_hub 1.0 and imported by
  ``run_downstream.py`` and the runner; stand-ins that fail clearly when used (only s3prl's
  Hugging Face upload and ``--hub huggingface`` use them).
* ``catalyst.data.sampler.DistributedSamplerWrapper``: the KS expert imports it; catalyst is
  not declared by s3prl and its last release does not install with current pip. Provided by
  :mod:`s3prl_upstream.catalyst_sampler` when catalyst is absent.
* ``torch.load``: ``weights_only`` is the default since torch 2.6, and the runner's
  checkpoints hold the run's ``argparse.Namespace``; it is added to torch's safe globals.

tensorboardX, which the runner imports but s3prl does not declare, is checked by
:func:`require_tensorboardx`. One fix is made when a downstream is loaded, by
:func:`fix_downstream`: the ASV expert's ``.cuda()`` call on its attention mask.
"""

import argparse
import functools
import importlib.machinery
import importlib.util
import io
import sys
import types

import huggingface_hub
import numpy as np
import soundfile
import torch
import torchaudio

from s3prl_upstream import audio_io, catalyst_sampler, sox_effects

HF_HUB_REMOVED = (
    "huggingface_hub.{name} was removed in huggingface_hub 1.0, so s3prl's Hugging Face Hub "
    "features (--hub huggingface, --push_to_hf_hub) do not work; upload an experiment directory "
    "with huggingface_hub.upload_folder instead"
)


def apply() -> None:
    """Install every shim the installed libraries need. Safe to call more than once."""
    install_set_audio_backend()
    install_sox_effects()
    install_soundfile_loader()
    install_hf_hub_stand_ins()
    install_catalyst_sampler()
    allow_runner_checkpoints()


def install_set_audio_backend() -> None:
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend


def _set_audio_backend(backend=None) -> None:
    """No-op: torchaudio >= 2.9 has no I/O backends to choose from."""


def install_sox_effects() -> None:
    if importlib.util.find_spec("torchaudio.sox_effects") is None:
        sys.modules["torchaudio.sox_effects"] = sox_effects
        torchaudio.sox_effects = sox_effects


def install_soundfile_loader() -> None:
    if not _torchaudio_load_works():
        torchaudio.load = audio_io.load


def _torchaudio_load_works() -> bool:
    """Whether torchaudio.load reads a small in-memory WAV file."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(160, dtype=np.float32), 16000, format="WAV")
    buffer.seek(0)
    try:
        torchaudio.load(buffer)
    except (ImportError, RuntimeError, OSError):
        return False
    return True


class _RemovedHfFolder:
    """Stand-in for huggingface_hub.HfFolder (removed in 1.0): reading the token still works."""

    @staticmethod
    def get_token():
        return huggingface_hub.get_token()

    @staticmethod
    def save_token(token):
        raise RuntimeError(HF_HUB_REMOVED.format(name="HfFolder.save_token"))


class _RemovedRepository:
    """Stand-in for huggingface_hub.Repository (removed in 1.0); any use raises."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(HF_HUB_REMOVED.format(name="Repository"))


def install_hf_hub_stand_ins() -> None:
    if not hasattr(huggingface_hub, "HfFolder"):
        huggingface_hub.HfFolder = _RemovedHfFolder
    if not hasattr(huggingface_hub, "Repository"):
        huggingface_hub.Repository = _RemovedRepository


def install_catalyst_sampler() -> None:
    if "catalyst" in sys.modules or importlib.util.find_spec("catalyst") is not None:
        return
    names = ("catalyst", "catalyst.data", "catalyst.data.sampler")
    modules = [types.ModuleType(name, f"stand-in from s3prl_upstream.compat ({name})") for name in names]
    modules[0].data, modules[1].sampler = modules[1], modules[2]
    modules[2].DistributedSamplerWrapper = catalyst_sampler.DistributedSamplerWrapper
    for name, module in zip(names, modules):
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []  # packages, so the submodule imports resolve
        sys.modules[name] = module


def allow_runner_checkpoints() -> None:
    """Let ``torch.load(..., weights_only=True)`` read s3prl runner checkpoints (``Args``)."""
    torch.serialization.add_safe_globals([argparse.Namespace])


def require_tensorboardx() -> None:
    """Raise ImportError with the fix when tensorboardX (needed by s3prl's runner) is missing."""
    if importlib.util.find_spec("tensorboardX") is None:
        raise ImportError(
            "s3prl's downstream runner needs tensorboardX, which s3prl does not declare: "
            "pip install tensorboardX (espnet-mamba lists it in install_requires)"
        )


def fix_downstream(downstream: str) -> None:
    """Fixes for a downstream expert, made when the runner loads it.

    ``sv_voxceleb1`` (ASV): the expert builds its attention mask on the CPU and calls
    ``.cuda()`` on it, so ``--device cpu`` fails. While its ``forward`` runs, ``Tensor.cuda``
    moves a tensor to the device of the features instead: the same on a GPU, and the CPU run
    works.
    """
    if downstream != "sv_voxceleb1":
        return
    from s3prl.downstream.sv_voxceleb1 import expert

    forward = expert.DownstreamExpert.forward
    if getattr(forward, "mask_follows_features", False):
        return

    @functools.wraps(forward)
    def forward_with_mask_on_the_features_device(self, mode, features, *args, **kwargs):
        device, cuda = features[0].device, torch.Tensor.cuda
        torch.Tensor.cuda = lambda tensor, *_, **__: tensor.to(device)
        try:
            return forward(self, mode, features, *args, **kwargs)
        finally:
            torch.Tensor.cuda = cuda

    forward_with_mask_on_the_features_device.mask_follows_features = True
    expert.DownstreamExpert.forward = forward_with_mask_on_the_features_device
