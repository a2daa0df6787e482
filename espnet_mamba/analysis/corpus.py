"""Running a model over a set of utterances: all their frames with each layer's features and
per-frame labels (for purity and CCA), or, utterance by utterance, the local input features
beside each layer's (for MINE)."""

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from espnet_mamba.analysis.alignments import FRAME_RATE, Alignment, alignment_end, frame_labels
from espnet_mamba.audio import load_audio
from espnet_mamba.analysis.features import hidden_states, input_features

logger = logging.getLogger(__name__)

# utterance id, number of frames -> one label per frame, None for an unlabelled frame
Labeler = Callable[[str, int], Sequence[Optional[str]]]

ALIGNMENT_SLACK_S = 0.1  # an alignment may end this much past the last frame


@dataclass
class FrameSet:
    """Frames of many utterances, concatenated.

    layers: per layer, features (N, D) float32 (layer 0 is the input of block 1).
    labels: per label kind, ids (N,) int64, -1 for unlabelled frames.
    vocabularies: per label kind, the label of each id.
    """

    layers: List[np.ndarray]
    labels: Dict[str, np.ndarray]
    vocabularies: Dict[str, List[str]]

    def labelled(self, kind: str, max_classes: Optional[int] = None) -> np.ndarray:
        """Mask (N,) of the frames with a ``kind`` label, among the ``max_classes`` most
        frequent labels when given."""
        ids = self.labels[kind]
        mask = ids >= 0
        if max_classes is not None:
            counts = np.bincount(ids[mask], minlength=len(self.vocabularies[kind]))
            frequent = np.argsort(-counts, kind="stable")[:max_classes]
            mask &= np.isin(ids, frequent)
        return mask


def alignment_labeler(
    alignment: Alignment,
    gap_label: Optional[str] = None,
    normalize: Optional[Callable[[str], str]] = None,
) -> Labeler:
    """Frame labels from an alignment (see :func:`frame_labels`), optionally normalised;
    warns when an utterance's alignment runs past its audio."""

    def label(utt: str, num_frames: int):
        segments = alignment[utt]
        if alignment_end(segments) > num_frames / FRAME_RATE + ALIGNMENT_SLACK_S:
            logger.warning(
                "%s: alignment ends at %.2f s but the audio gives %d frames (%.2f s): do they match?",
                utt, alignment_end(segments), num_frames, num_frames / FRAME_RATE,
            )  # fmt: skip
        labels = frame_labels(segments, num_frames, FRAME_RATE, gap_label)
        return [normalize(x) if normalize and x is not None else x for x in labels]

    return label


def speaker_labeler(utt2spk: Mapping[str, str]) -> Labeler:
    """Every frame of an utterance labelled with its speaker."""
    return lambda utt, num_frames: [utt2spk[utt]] * num_frames


def collect_frames(
    model, wav_paths: Mapping[str, str], utts: Sequence[str], labelers: Mapping[str, Labeler], device="cpu"
) -> FrameSet:
    """Run ``model`` (eval mode) on each utterance and gather its frames and labels."""
    per_layer: List[List[np.ndarray]] = []
    per_kind: Dict[str, List[Optional[str]]] = {kind: [] for kind in labelers}
    for utt in utts:
        states = hidden_states(model, load_audio(wav_paths[utt], utt), device)
        if not per_layer:
            per_layer = [[] for _ in states]
        for layer, h in zip(per_layer, states, strict=True):
            layer.append(h)
        for kind, labeler in labelers.items():
            per_kind[kind].extend(labeler(utt, len(states[0])))
    labels, vocabularies = {}, {}
    for kind, strings in per_kind.items():
        vocabulary = sorted({s for s in strings if s is not None})
        index = {s: i for i, s in enumerate(vocabulary)}
        labels[kind] = np.array([index[s] if s is not None else -1 for s in strings], dtype=np.int64)
        vocabularies[kind] = vocabulary
    return FrameSet([np.concatenate(layer) for layer in per_layer], labels, vocabularies)


def utterance_features(
    model, wav_paths: Mapping[str, str], utts: Sequence[str], input_kind: str, device="cpu"
) -> Iterator[Tuple[np.ndarray, List[np.ndarray]]]:
    """Per utterance: input features (frames, dx) of ``input_kind`` ("mfcc", "cnn") and the
    hidden states [(frames, D)] * (num_layers + 1), cut to the same number of frames."""
    for i, utt in enumerate(utts, 1):
        wav = load_audio(wav_paths[utt], utt)
        states = hidden_states(model, wav, device)
        inputs = input_features(input_kind, model, wav, device)
        n = min(len(inputs), len(states[0]))
        logger.info("utterance %d/%d: %s, %d frames", i, len(utts), utt, n)
        yield inputs[:n], [h[:n] for h in states]
