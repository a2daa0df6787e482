"""Kaldi-style data files the analyses read: ``wav.scp`` (``utt path``), ``utt2spk``
(``utt speaker``), and the 16 kHz mono audio they point to."""

import logging
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import soundfile

from espnet_mamba.validation import SAMPLE_RATE

logger = logging.getLogger(__name__)


def _read_two_columns(path, what: str) -> Dict[str, str]:
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected '<utterance id> <{what}>', got {line.strip()!r}")
            utt, value = fields
            if utt in table:
                raise ValueError(f"{path}:{lineno}: utterance {utt!r} appears twice")
            table[utt] = value
    if not table:
        raise ValueError(f"{path} is empty")
    return table


def read_wav_scp(path) -> Dict[str, str]:
    """Utterance id -> audio file path, in file order. Relative paths are taken from the
    current directory, as Kaldi does. Piped commands (``... |``) are refused."""
    table = _read_two_columns(path, "audio path")
    for utt, value in table.items():
        if value.rstrip().endswith("|"):
            raise ValueError(f"{path}: utterance {utt!r} is a piped command; only plain audio file paths are read")
    return table


def read_utt2spk(path) -> Dict[str, str]:
    """Utterance id -> speaker id."""
    return _read_two_columns(path, "speaker id")


def load_wav(path) -> np.ndarray:
    """A 16 kHz mono audio file as float32 samples (samples,). Raises ValueError naming the
    file for another sample rate or more than one channel."""
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"cannot read audio {path}: {err}") from None
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: sampled at {rate} Hz; the models need {SAMPLE_RATE} Hz, resample it first")
    if samples.shape[1] != 1:
        raise ValueError(f"{path}: has {samples.shape[1]} channels; the models need mono audio")
    return samples[:, 0]


def select_utterances(
    wav_paths: Mapping[str, str], required: Sequence[Mapping[str, object]], max_utts: Optional[int] = None
) -> List[str]:
    """The utterances of ``wav_paths`` (in its order) that every table in ``required`` also
    has, at most ``max_utts`` of them. Raises ValueError when none are left."""
    utts = [utt for utt in wav_paths if all(utt in table for table in required)]
    if len(utts) < len(wav_paths):
        logger.warning(
            "%d of %d utterances lack alignments or speakers; skipped", len(wav_paths) - len(utts), len(wav_paths)
        )
    if not utts:
        raise ValueError("no utterance of wav.scp has alignments (and speakers): check that the utterance ids match")
    return utts[:max_utts] if max_utts else utts
