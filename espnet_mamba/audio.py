"""Kaldi-style lists (``wav.scp``, ``text``, ...) and audio files: reading them with the checks
every tool needs, and writing the data dirs that ESPnet's recipes read."""

from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Tuple, Union

import numpy as np
import soundfile
import torch

from espnet_mamba.validation import SAMPLE_RATE


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
            raise ValueError(f"{path}:{number}: utterance {parts[0]!r} appears twice")
        seen.add(parts[0])
        entries.append((parts[0], parts[1].strip()))
    return entries


def read_wav_scp(path: Union[str, Path]) -> Dict[str, str]:
    """utt_id -> audio file path, in file order; piped commands (``... |``) are refused."""
    table = dict(read_scp(path))
    for utt_id, value in table.items():
        if value.endswith("|"):
            raise ValueError(f"{path}: utterance {utt_id!r} is a piped command; only audio file paths are read")
    return table


def audio_info(path: Union[str, Path], name: str):
    """soundfile's header information of a file that must be mono 16 kHz audio (checked
    without reading its samples); ValueError starting with ``name`` otherwise."""
    info = soundfile.info(str(path))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise ValueError(f"{name}: need mono {SAMPLE_RATE} Hz audio, got {info.channels} channel(s) "
                         f"at {info.samplerate} Hz")  # fmt: skip
    return info


def load_audio(path: Union[str, Path], utt_id: str = "", min_samples: int = 1) -> torch.Tensor:
    """A mono 16 kHz file of at least ``min_samples`` samples -> float32 tensor (samples,).
    Raises ValueError naming the problem."""
    name = f"utterance {utt_id}: {path}" if utt_id else str(path)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own error types
        raise ValueError(f"{name}: cannot read audio: {error}") from error
    if rate != SAMPLE_RATE:
        raise ValueError(f"{name}: sampled at {rate} Hz; the models need {SAMPLE_RATE} Hz, resample it first")
    if data.shape[1] != 1:
        raise ValueError(f"{name}: has {data.shape[1]} channels; the models need mono audio")
    if data.shape[0] == 0:
        raise ValueError(f"{name}: audio is empty")
    if data.shape[0] < min_samples:
        raise ValueError(f"{name}: {data.shape[0]} samples; at least {min_samples} "
                         f"({1000 * min_samples // SAMPLE_RATE} ms) are needed for one frame")  # fmt: skip
    if not np.isfinite(data).all():
        raise ValueError(f"{name}: audio contains NaN or Inf samples")
    return torch.from_numpy(data[:, 0].copy())


def iter_wav_scp(path: Union[str, Path]) -> Iterator[Tuple[str, torch.Tensor]]:
    """(utt_id, waveform) for each line of a wav.scp whose values are file paths."""
    for utt_id, value in read_wav_scp(path).items():
        yield utt_id, load_audio(value, utt_id)


def write_data_dir(out_dir: Union[str, Path], wav_scp: Mapping[str, str], utt2spk: Mapping[str, str],
                   **tables: Mapping[str, str]) -> Path:  # fmt: skip
    """A Kaldi-style data dir: ``wav.scp``, ``utt2spk``, the ``spk2utt`` made from it, and one
    file per further table under its keyword's name (``text``, ``segments``, ``reco2dur``, ...).
    Each file has a line ``key value`` per entry, sorted by key in byte order (Kaldi's
    ``LC_ALL=C sort``); ``spk2utt``'s utterances are sorted too.

    The keys of ``utt2spk`` are the utterances: those of ``segments`` where it is given (then
    ``wav.scp`` lists recordings), else those of ``wav.scp``. Raises ValueError where they
    differ, where a key holds whitespace, or where a value is empty or spans lines. Returns
    ``out_dir``.
    """
    out_dir = Path(out_dir)
    tables = {"wav.scp": wav_scp, "utt2spk": utt2spk, **tables}
    for name, table in tables.items():
        for key, value in table.items():
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"{out_dir / name}: key {key!r} is empty or holds whitespace")
            if not str(value).strip() or "\n" in str(value):
                raise ValueError(f"{out_dir / name}: {key}: value {value!r} is empty or spans lines")
    listed_by = "segments" if "segments" in tables else "wav.scp"
    if set(utt2spk) != set(tables[listed_by]):
        differing = sorted(set(tables[listed_by]) ^ set(utt2spk))[:3]
        raise ValueError(f"{out_dir}: utt2spk and {listed_by} list different utterances, e.g. {differing}")
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    tables["spk2utt"] = {speaker: " ".join(utts) for speaker, utts in spk2utt.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        (out_dir / name).write_text("".join(f"{key} {table[key]}\n" for key in sorted(table)), encoding="utf-8")
    return out_dir


__all__ = ["SAMPLE_RATE", "iter_wav_scp", "load_audio", "read_scp", "read_wav_scp", "write_data_dir"]
