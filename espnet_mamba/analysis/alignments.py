"""Time alignments of phones and words, read from CTM files or Praat TextGrids, turned into
one label per model frame.

* CTM: one segment per line, ``utt channel start duration label [confidence]`` (seconds).
* TextGrid: Praat's long text format, one file per utterance (the utterance id is the file
  name without ``.TextGrid``), as the Montreal Forced Aligner writes, with interval tiers
  named ``phones`` and ``words``. Empty intervals are silence (no label).

Frame ``i`` at rate ``r`` sees the audio ``[i / r, i / r + w)`` (``w``: the model's 25 ms
window) and takes the label of the segment holding its centre ``i / r + w / 2``; a frame no
segment covers gets ``gap_label``.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from espnet_mamba.nn.feature_extractor import FRAME_HOP, MIN_SAMPLES
from espnet_mamba.validation import SAMPLE_RATE

logger = logging.getLogger(__name__)

FRAME_RATE = SAMPLE_RATE / FRAME_HOP  # 50 frames per second of the models (20 ms stride)
FRAME_WINDOW_S = MIN_SAMPLES / SAMPLE_RATE  # 25 ms: the audio one frame sees, from 320 i on


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of an utterance, in seconds."""

    start: float
    end: float
    label: str


Alignment = Dict[str, List[Segment]]  # utterance id -> segments sorted by start


def read_ctm(path) -> Alignment:
    """Segments per utterance of a CTM file. Raises ValueError naming the file and line of a
    malformed entry (wrong field count, non-numeric or negative times)."""
    alignment: Alignment = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or fields[0].startswith(";;"):
                continue
            where = f"{path}:{lineno}"
            if len(fields) not in (5, 6):
                raise ValueError(
                    f"{where}: expected 'utt channel start duration label [confidence]', got {line.strip()!r}"
                )
            utt, _, start, duration, label = fields[:5]
            try:
                start, duration = float(start), float(duration)
            except ValueError:
                raise ValueError(
                    f"{where}: start and duration must be numbers, got {fields[2]!r} and {fields[3]!r}"
                ) from None
            if start < 0 or duration < 0:
                raise ValueError(f"{where}: negative start or duration in {line.strip()!r}")
            alignment.setdefault(utt, []).append(Segment(start, start + duration, label))
    for segments in alignment.values():
        segments.sort(key=lambda s: s.start)
    return alignment


_KEY_VALUE = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")
_ITEM = re.compile(r"^\s*item\s*\[\s*\d+\s*\]\s*:\s*$")
_INTERVAL = re.compile(r"^\s*intervals\s*\[\s*\d+\s*\]\s*:\s*$")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def _praat_string(value: str, where: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError(f"{where}: expected a quoted string, got {value!r}")
    return value[1:-1].replace('""', '"')


def _praat_number(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None


def read_textgrid(path) -> Dict[str, List[Segment]]:
    """The interval tiers of a long-format TextGrid: tier name -> labelled segments (empty
    intervals left out). Raises ValueError naming the file and line of what it cannot read."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    if not lines or "ooTextFile" not in lines[0]:
        raise ValueError(f"{path}:1: not a Praat text file (expected 'File type = \"ooTextFile\"')")
    tiers: Dict[str, List[Segment]] = {}
    tier_class = tier_name = None
    interval: Optional[dict] = None  # fields of the interval being read
    seen_item = False

    def close_interval(where):
        nonlocal interval
        if interval is not None:
            missing = {"xmin", "xmax", "text"} - set(interval)
            if missing:
                raise ValueError(f"{where}: interval lacks {sorted(missing)}")
            if interval["text"].strip():
                tiers[tier_name].append(Segment(interval["xmin"], interval["xmax"], interval["text"].strip()))
            interval = None

    for lineno, line in enumerate(lines, 1):
        where = f"{path}:{lineno}"
        if _ITEM.match(line):
            close_interval(where)
            seen_item, tier_class, tier_name = True, None, None
            continue
        if _INTERVAL.match(line):
            close_interval(where)
            if tier_name is None or tier_class != "IntervalTier":
                raise ValueError(f"{where}: interval outside a named IntervalTier")
            interval = {}
            continue
        match = _KEY_VALUE.match(line)
        if not match or not seen_item:
            continue  # header lines, "intervals: size = n", "points [i]:" and the like
        key, value = match.groups()
        if interval is not None and key in ("xmin", "xmax"):
            interval[key] = _praat_number(value, where)
        elif interval is not None and key == "text":
            interval["text"] = _praat_string(value, where)
        elif key == "class":
            tier_class = _praat_string(value, where)
        elif key == "name":
            tier_name = _praat_string(value, where)
            if tier_class == "IntervalTier":
                if tier_name in tiers:
                    raise ValueError(f"{where}: tier {tier_name!r} appears twice")
                tiers[tier_name] = []
    close_interval(f"{path}:{len(lines)}")
    if not seen_item:
        raise ValueError(f"{path}: no tiers found; only Praat's long text format is read (short format is not)")
    for segments in tiers.values():
        segments.sort(key=lambda s: s.start)
    return tiers


def read_textgrid_dir(directory, tier: str) -> Alignment:
    """Segments of one tier from every ``*.TextGrid`` below ``directory`` (MFA writes one
    folder per speaker); the utterance id is the file name without the extension."""
    directory = Path(directory)
    files = sorted(directory.rglob("*.TextGrid"))
    if not files:
        raise ValueError(f"no .TextGrid files found under {directory}")
    alignment: Alignment = {}
    for file in files:
        tiers = read_textgrid(file)
        if tier not in tiers:
            raise ValueError(f"{file}: no interval tier named {tier!r} (tiers: {', '.join(tiers) or 'none'})")
        if file.stem in alignment:
            raise ValueError(f"{file}: utterance {file.stem!r} has two TextGrids")
        alignment[file.stem] = tiers[tier]
    return alignment


def read_alignments(path, tier: str) -> Alignment:
    """A CTM file, or a folder of TextGrids from which ``tier`` ("phones", "words") is read."""
    path = Path(path)
    if path.is_dir():
        return read_textgrid_dir(path, tier)
    if not path.is_file():
        raise ValueError(f"alignments {path} do not exist")
    return read_ctm(path)


def frame_labels(
    segments: List[Segment], num_frames: int, frame_rate: float = FRAME_RATE, gap_label: Optional[str] = None,
    window_s: float = FRAME_WINDOW_S,
) -> List[Optional[str]]:
    """The label of each of ``num_frames`` frames: that of the segment holding the centre of
    the audio the frame sees, ``i / frame_rate + window_s / 2``, or ``gap_label`` where no
    segment does. (The model's frame i sees [0.02 i, 0.02 i + 0.025) s: centre 0.02 i + 0.0125,
    as that of the MFCC frame 2 i its k-means label came from.)"""
    if num_frames < 0 or frame_rate <= 0:
        raise ValueError(f"need num_frames >= 0 and frame_rate > 0, got {num_frames} and {frame_rate}")
    labels: List[Optional[str]] = [gap_label] * num_frames
    centres = np.arange(num_frames) / frame_rate + window_s / 2
    for segment in segments:
        first, last = np.searchsorted(centres, [segment.start, segment.end], side="left")
        for i in range(first, last):
            labels[i] = segment.label
    return labels


_KALDI_POSITION = re.compile(r"_[BIES]$")
_STRESS = re.compile(r"(?<=[A-Za-z])[0-2]$")


def normalize_phone(label: str) -> str:
    """Strip a Kaldi word-position suffix and a stress digit: ``AH0_B`` -> ``AH``."""
    return _STRESS.sub("", _KALDI_POSITION.sub("", label))


def alignment_end(segments: List[Segment]) -> float:
    """Where the last segment ends (0 for none)."""
    return max((s.end for s in segments), default=0.0)
