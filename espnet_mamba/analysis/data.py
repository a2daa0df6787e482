"""Kaldi-style data files the analyses read. wav.scp and audio come from
:mod:`espnet_mamba.audio`; here: utt2spk and the choice of utterances."""

import logging
from typing import Dict, List, Mapping, Optional, Sequence

from espnet_mamba.audio import load_audio, read_scp, read_wav_scp

__all__ = ["load_audio", "read_utt2spk", "read_wav_scp", "select_utterances"]

logger = logging.getLogger(__name__)


def read_utt2spk(path) -> Dict[str, str]:
    """Utterance id -> speaker id."""
    return dict(read_scp(path))


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
