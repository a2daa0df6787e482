"""Reading Kaldi-style ``wav.scp`` lists and audio files, with the checks every tool needs."""

from pathlib import Path
from typing import Iterator, List, Tuple, Union

import numpy as np
import soundfile
import torch

from espnet_mamba.validation import SAMPLE_RATE, check_sample_rate


def read_scp(path: Union[str, Path]) -> List[Tuple[str, str]]:
    """Lines ``utt_id value`` -> [(utt_id, value)], in file order; errors name the line."""
    entries, seen = [], set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'utt_id value', got {line!r}")
        if parts[0] in seen:
            raise ValueError(f"{path}:{number}: utterance {parts[0]} appears twice")
        seen.add(parts[0])
        entries.append((parts[0], parts[1].strip()))
    return entries


def load_audio(path: Union[str, Path], utt_id: str = "") -> torch.Tensor:
    """A mono 16 kHz file -> float32 tensor (samples,). Raises ValueError naming the problem."""
    name = f"{utt_id} ({path})" if utt_id else str(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own error types
        raise ValueError(f"{name}: cannot read audio: {error}") from error
    try:
        check_sample_rate(rate)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if data.shape[1] != 1:
        raise ValueError(f"{name}: audio must be mono, got {data.shape[1]} channels")
    if data.shape[0] == 0:
        raise ValueError(f"{name}: audio is empty")
    if not np.isfinite(data).all():
        raise ValueError(f"{name}: audio contains NaN or Inf samples")
    return torch.from_numpy(data[:, 0].copy())


def iter_wav_scp(path: Union[str, Path]) -> Iterator[Tuple[str, torch.Tensor]]:
    """(utt_id, waveform) for each line of a wav.scp whose values are file paths."""
    for utt_id, value in read_scp(path):
        yield utt_id, load_audio(value, utt_id)


__all__ = ["SAMPLE_RATE", "iter_wav_scp", "load_audio", "read_scp"]
