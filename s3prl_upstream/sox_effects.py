"""A stand-in for ``torchaudio.sox_effects``, which torchaudio 2.9 removed.

s3prl's SUPERB datasets call ``apply_effects_file`` / ``apply_effects_tensor`` with a few
sox effects: ``channels``, ``rate``, ``gain`` (KS, QbE, ASV), ``silence`` (ASV) and ``norm``
(s3prl's MOS and SWS2013 datasets). These are implemented here with torch and soundfile; any other effect
raises ValueError naming it.

``silence`` follows sox's algorithm: a sample is loud when the RMS of the 20 ms window ending
at it is above the threshold; leading audio is dropped until a loud run of the given
duration, and (below periods -1) every quiet run at least the given duration long is
dropped, after which leading trimming starts again. Only that form is supported.
"""

from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio.functional

SUPPORTED_EFFECTS = ("channels", "rate", "gain", "norm", "silence")
RMS_WINDOW_SECONDS = 0.02


def apply_effects_tensor(
    tensor: torch.Tensor, sample_rate: int, effects: Sequence[Sequence[str]], channels_first: bool = True
) -> Tuple[torch.Tensor, int]:
    """Apply sox-style ``effects`` to audio (channels, samples) (or (samples, channels) when
    ``channels_first`` is False). Returns the audio in the same layout and its sample rate."""
    if tensor.dim() != 2:
        raise ValueError(f"apply_effects_tensor needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    wav = tensor if channels_first else tensor.t()
    wav = wav.to(torch.float32)
    for effect in effects:
        wav, sample_rate = _apply_one(wav, int(sample_rate), [str(part) for part in effect])
    return (wav if channels_first else wav.t()), sample_rate


def apply_effects_file(
    path: Union[str, Path],
    effects: Sequence[Sequence[str]],
    normalize: bool = True,
    channels_first: bool = True,
    format=None,
) -> Tuple[torch.Tensor, int]:
    """Read an audio file with soundfile and apply ``effects``; returns (audio, sample rate)."""
    if not normalize:
        raise ValueError("this torchaudio.sox_effects stand-in only returns float audio (normalize=True)")
    data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True, format=format)
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    return apply_effects_tensor(wav, sample_rate, effects, channels_first)


def _apply_one(wav: torch.Tensor, sample_rate: int, effect: List[str]) -> Tuple[torch.Tensor, int]:
    """One effect on (channels, samples) float audio."""
    name, args = effect[0], effect[1:]
    if name == "channels":
        return _channels(wav, int(args[0])), sample_rate
    if name == "rate":
        new_rate = int(float(args[0].rstrip("k")) * (1000 if args[0].endswith("k") else 1))
        if new_rate != sample_rate:
            wav = torchaudio.functional.resample(wav, sample_rate, new_rate)
        return wav, new_rate
    if name == "gain":
        if len(args) != 1 or not _is_number(args[0]):
            raise ValueError(f"sox effect stand-in supports only 'gain DB', got {effect}")
        return wav * 10 ** (float(args[0]) / 20), sample_rate
    if name == "norm":
        level_db = float(args[0]) if args else 0.0
        peak = wav.abs().max()
        return (wav * (10 ** (level_db / 20) / peak) if peak > 0 else wav), sample_rate
    if name == "silence":
        return _silence(wav, sample_rate, args), sample_rate
    raise ValueError(
        f"sox effect {name!r} is not available: torchaudio.sox_effects was removed in torchaudio 2.9 "
        f"and this stand-in implements only {', '.join(SUPPORTED_EFFECTS)}"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == wav.shape[0]:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if wav.shape[0] == 1:
        return wav.expand(channels, -1).clone()
    raise ValueError(f"cannot convert {wav.shape[0]} channels to {channels}")


def _threshold(text: str) -> float:
    """sox threshold: 'P%' of full scale or 'XdB'/'Xd' in decibels -> linear amplitude."""
    if text.endswith("%"):
        return float(text[:-1]) / 100
    if text.endswith("d") or text.endswith("dB"):
        return 10 ** (float(text.rstrip("dB")) / 20)
    return float(text)


def _silence(wav: torch.Tensor, sample_rate: int, args: List[str]) -> torch.Tensor:
    """sox 'silence ABOVE DUR THR [-1 DUR THR]' with ABOVE in {0, 1}; see the module docstring."""
    if len(args) not in (3, 6) or args[0] not in ("0", "1") or (len(args) == 6 and args[3] != "-1"):
        raise ValueError(
            f"sox 'silence' stand-in supports 'silence 0|1 DUR THR [-1 DUR THR]', got silence {' '.join(args)}"
        )
    rms = _window_rms(wav, max(1, round(RMS_WINDOW_SECONDS * sample_rate)))
    trim_leading = args[0] == "1"
    loud_starts = _first_samples_of_runs(rms > _threshold(args[2]), max(1, round(float(args[1]) * sample_rate)))
    if len(args) == 6:
        quiet_length = max(1, round(float(args[4]) * sample_rate))
        quiet_starts = _first_samples_of_runs(rms < _threshold(args[5]), quiet_length)
    else:
        quiet_length, quiet_starts = 0, np.zeros(0, dtype=np.int64)

    keep = np.zeros(rms.shape[0], dtype=bool)
    position = 0
    while position < rms.shape[0]:
        if trim_leading:
            later = loud_starts[np.searchsorted(loud_starts, position) :]
            if later.size == 0:
                break
            position = int(later[0])
        later = quiet_starts[np.searchsorted(quiet_starts, position) :]
        stop = int(later[0]) if later.size else rms.shape[0]
        keep[position:stop] = True
        position = stop + quiet_length
    return wav[:, torch.from_numpy(keep)]


def _window_rms(wav: torch.Tensor, window: int) -> np.ndarray:
    """RMS over channels of the ``window`` samples ending at each sample: (samples,)."""
    power = wav.double().pow(2).mean(dim=0).numpy()
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    ends = np.arange(1, power.shape[0] + 1)
    starts = np.maximum(ends - window, 0)
    return np.sqrt(np.maximum(cumulative[ends] - cumulative[starts], 0.0) / (ends - starts))


def _first_samples_of_runs(flags: np.ndarray, length: int) -> np.ndarray:
    """Sorted indices i where flags[i : i + length] are all True."""
    count = np.concatenate([[0], np.cumsum(flags)])
    ends = np.arange(flags.shape[0] - length + 1) + length
    return np.flatnonzero(count[ends] - count[ends - length] == length) if ends.size else np.zeros(0, np.int64)
