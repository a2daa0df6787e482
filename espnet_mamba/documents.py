"""Long-form (document-level) ASR data: consecutive utterances of one recording (or speaker)
joined into documents of at most N minutes, as in paper 1's long-context experiments.

Input: a Kaldi data dir with ``wav.scp`` and ``text``, and either ``segments`` (utterances cut
from recordings, e.g. TED-LIUM talks: grouped by recording, ordered by start time) or
``utt2spk`` (one file per utterance, e.g. LibriSpeech: grouped by speaker, ordered by utterance
id, which is chapter order there). Output: a data dir of document wavs (the utterances' audio
concatenated), their joined ``text``, ``utt2spk``/``spk2utt`` (document -> group), and
``doc_segments`` (``utt_id doc_id start end``: where each utterance lies in its document, in
Kaldi's segments format). ``max_seconds <= 0`` cuts each utterance to a wav of its own.
"""

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import soundfile

from espnet_mamba.audio import audio_info, read_scp, read_wav_scp, write_data_dir
from espnet_mamba.validation import SAMPLE_RATE


@dataclass(frozen=True)
class Utterance:
    """An utterance: its audio is ``path`` from ``start`` to ``end`` seconds (end None: to
    the end of the file)."""

    utt_id: str
    group: str
    path: str
    start: float
    end: Optional[float]
    text: str


def _read_map(path: Path) -> Dict[str, str]:
    return dict(read_scp(path)) if path.exists() else {}


def read_data_dir(data_dir: Union[str, Path]) -> List[Utterance]:
    """The utterances of a data dir in document order: by recording and start time (with
    ``segments``) or by speaker and utterance id (with ``utt2spk``)."""
    data_dir = Path(data_dir)
    wav_scp = read_wav_scp(data_dir / "wav.scp")
    texts = dict(read_scp(data_dir / "text")) if (data_dir / "text").exists() else None
    if texts is None:
        raise FileNotFoundError(f"no text in {data_dir}")
    utterances = []
    segments_path = data_dir / "segments"
    if segments_path.exists():
        for utt_id, value in read_scp(segments_path):
            fields = value.split()
            if len(fields) != 3:
                raise ValueError(f"{segments_path}: {utt_id}: expected 'utt_id recording start end'")
            recording, start, end = fields[0], float(fields[1]), float(fields[2])
            if recording not in wav_scp:
                raise ValueError(f"{segments_path}: {utt_id}: recording {recording} is not in wav.scp")
            if not 0 <= start < end:
                raise ValueError(f"{segments_path}: {utt_id}: bad times {start} .. {end}")
            utterances.append(Utterance(utt_id, recording, wav_scp[recording], start, end, texts.get(utt_id, "")))
        utterances.sort(key=lambda u: (u.group, u.start, u.utt_id))
    else:
        speakers = _read_map(data_dir / "utt2spk")
        if not speakers:
            raise FileNotFoundError(f"{data_dir} has neither segments nor utt2spk: cannot group utterances")
        for utt_id, path in wav_scp.items():
            if utt_id not in speakers:
                raise ValueError(f"{data_dir}/utt2spk has no speaker for {utt_id}")
            utterances.append(Utterance(utt_id, speakers[utt_id], path, 0.0, None, texts.get(utt_id, "")))
        utterances.sort(key=lambda u: (u.group, u.utt_id))
    missing = [u.utt_id for u in utterances if u.utt_id not in texts]
    if missing:
        raise ValueError(f"{data_dir}/text has no transcript for {len(missing)} utterances, e.g. {missing[:3]}")
    return utterances


def duration(utterance: Utterance) -> float:
    """Seconds of audio of ``utterance``."""
    if utterance.end is not None:
        return utterance.end - utterance.start
    return soundfile.info(utterance.path).duration - utterance.start


def plan_documents(utterances: List[Utterance], max_seconds: float) -> List[List[Utterance]]:
    """Consecutive utterances of a group packed greedily into documents of at most
    ``max_seconds`` (an utterance longer than that is a document alone); ``max_seconds <= 0``:
    one document per utterance."""
    documents = []
    for _, members in groupby(utterances, key=lambda u: u.group):
        current, length = [], 0.0
        for utterance in members:
            seconds = duration(utterance)
            if current and (max_seconds <= 0 or length + seconds > max_seconds):
                documents.append(current)
                current, length = [], 0.0
            current.append(utterance)
            length += seconds
        if current:
            documents.append(current)
    return documents


def load_segment(utterance: Utterance) -> np.ndarray:
    """The utterance's samples (float32, mono, 16 kHz); ValueError naming the problem."""
    info = audio_info(utterance.path, f"{utterance.utt_id} ({utterance.path})")
    start = int(round(utterance.start * SAMPLE_RATE))
    stop = None if utterance.end is None else int(round(utterance.end * SAMPLE_RATE))
    if stop is not None and stop > info.frames + SAMPLE_RATE // 100:
        raise ValueError(f"{utterance.utt_id}: ends at {utterance.end} s, after the end of {utterance.path}")
    audio, _ = soundfile.read(utterance.path, start=start, stop=stop, dtype="float32")
    return audio


def document_id(document: List[Utterance], index: int, single: bool) -> str:
    return document[0].utt_id if single else f"{document[0].group}-doc{index:04d}"


def write_documents(documents: List[List[Utterance]], out_dir: Union[str, Path], single: bool = False,
                    audio_dir: Union[str, Path, None] = None) -> Path:
    """Document wavs (16-bit PCM) and the data dir files listed in the module docstring."""
    out_dir = Path(out_dir)
    audio_dir = Path(audio_dir) if audio_dir is not None else out_dir / "wav"
    audio_dir.mkdir(parents=True, exist_ok=True)
    wav_scp, text, utt2spk, doc_segments, index = {}, {}, {}, {}, {}
    for document in documents:
        group = document[0].group
        index[group] = index.get(group, 0) + 1
        doc_id = document_id(document, index[group], single)
        pieces, offset = [], 0
        for utterance in document:
            audio = load_segment(utterance)
            doc_segments[utterance.utt_id] = (
                f"{doc_id} {offset / SAMPLE_RATE:.3f} {(offset + len(audio)) / SAMPLE_RATE:.3f}"
            )
            pieces.append(audio)
            offset += len(audio)
        path = (audio_dir / f"{doc_id}.wav").resolve()
        soundfile.write(path, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
        wav_scp[doc_id] = str(path)
        text[doc_id] = " ".join(u.text for u in document if u.text)
        utt2spk[doc_id] = group
    write_data_dir(out_dir, wav_scp=wav_scp, utt2spk=utt2spk, text=text, doc_segments=doc_segments)
    return out_dir
