"""s3prl upstream expert for Mamba-HuBERT.

s3prl's interface: ``forward`` takes a list of unpadded 1-D 16 kHz waveforms and returns a
dict whose ``hidden_states`` is a list of (batch, frames, D) tensors, from the blocks' input
to the last block's output, and whose ``last_hidden_state`` is the last of them;
``get_downsample_rates(key)`` gives samples per frame (320).
"""

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
import yaml
from torch.nn.utils.rnn import pad_sequence

from espnet_mamba.config import ModelConfig, list_presets, load_config
from espnet_mamba.espnet.checkpoint import load_pretrained
from espnet_mamba.model import MambaHuBERTForPretraining

CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def build_upstream_model(
    ckpt: Optional[str] = None, model_config: Optional[str] = None, **overrides
) -> MambaHuBERTForPretraining:
    """The model behind the expert.

    ckpt: a checkpoint that :func:`espnet_mamba.espnet.checkpoint.load_pretrained` reads
        (packed ESPnet zip, ESPnet ``.pth`` with its ``config.yaml``, or ``save_pretrained`` file).
    model_config: without ``ckpt`` only, a RANDOMLY INITIALISED model for smoke tests: a preset
        name (``mamba_small``) or a YAML file of ModelConfig fields, optionally with ``preset``.
    overrides: ModelConfig fields, e.g. ``ssm_impl: torch`` (s3prl's ``extra_conf``).
    """
    unknown = set(overrides) - CONFIG_FIELDS
    if unknown:
        raise ValueError(f"mamba_hubert got unknown options {sorted(unknown)}; options are ModelConfig fields")
    if ckpt is not None and model_config is not None:
        raise ValueError("give mamba_hubert either ckpt (a checkpoint) or model_config (random init), not both")
    if ckpt is not None:
        return load_pretrained(ckpt, **overrides)
    if model_config is None:
        raise ValueError(
            "mamba_hubert needs ckpt= (a checkpoint path) or model_config= (a preset name or YAML "
            "file, for a randomly initialised model)"
        )
    return MambaHuBERTForPretraining(_config_from(model_config, overrides))


def _config_from(model_config: str, overrides: dict) -> ModelConfig:
    if model_config in list_presets():
        return load_config(model_config, **overrides)
    path = Path(model_config)
    if not path.is_file():
        raise ValueError(f"model_config {model_config!r} is neither a preset ({', '.join(list_presets())}) nor a file")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of ModelConfig fields")
    preset = values.pop("preset", None)
    return load_config(preset, **{**values, **overrides})


class UpstreamExpert(nn.Module):
    """Mamba-HuBERT as an s3prl upstream (see the module docstring)."""

    def __init__(self, ckpt: Optional[str] = None, model_config: Optional[str] = None, **overrides):
        super().__init__()
        self.model = build_upstream_model(ckpt, model_config, **overrides)
        self.downsample_rate = self.model.backbone.feature_extractor.stride

    def get_downsample_rates(self, key: str) -> int:
        return self.downsample_rate

    def forward(self, wavs: List[torch.Tensor]) -> Dict[str, Union[torch.Tensor, List[torch.Tensor]]]:
        """wavs: list of (samples,) at 16 kHz -> hidden_states [(batch, frames, D)] * (layers + 1)."""
        if not isinstance(wavs, (list, tuple)) or len(wavs) == 0:
            raise ValueError("mamba_hubert expects a non-empty list of 1-D waveforms")
        for i, wav in enumerate(wavs):
            if not torch.is_tensor(wav) or wav.dim() != 1:
                shape = tuple(wav.shape) if torch.is_tensor(wav) else type(wav).__name__
                raise ValueError(f"waveform {i} must be a 1-D tensor (samples,) of mono 16 kHz audio, got {shape}")
        lengths = torch.tensor([wav.shape[0] for wav in wavs], device=wavs[0].device)
        padded = pad_sequence(list(wavs), batch_first=True)
        hidden_states, _ = self.model.extract_features(padded, lengths)
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}
