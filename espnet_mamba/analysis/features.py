"""Per-frame features of one utterance at the models' 50 Hz frame rate: every layer's hidden
states, and the local input features MINE compares them with (MFCC or the CNN's output).

Frame i of the model sees samples [320 i, 320 i + 400); the MFCC frames here use the same
400-sample window and 320-sample hop, so frame i of both describes the same audio.
"""

from typing import List

import numpy as np
import torch
import torchaudio

from espnet_mamba.nn.feature_extractor import FRAME_HOP, MIN_SAMPLES
from espnet_mamba.validation import SAMPLE_RATE

INPUT_FEATURES = ("mfcc", "cnn")
_WINDOW, _HOP = MIN_SAMPLES, FRAME_HOP  # the model's frames: 400 samples every 320


@torch.no_grad()
def hidden_states(model, wav: np.ndarray, device="cpu") -> List[np.ndarray]:
    """wav (samples,) at 16 kHz -> hidden states of a MambaHuBERT(ForPretraining) model in
    eval mode: num_layers + 1 arrays (frames, D) float32, input of block 1 first."""
    wavs = torch.as_tensor(wav, dtype=torch.float32, device=device)[None]
    states, _ = model.extract_features(wavs, sample_rate=SAMPLE_RATE)
    return [h[0].float().cpu().numpy() for h in states]


@torch.no_grad()
def cnn_features(model, wav: np.ndarray, device="cpu") -> np.ndarray:
    """wav (samples,) -> the waveform CNN's output (frames, 512) of a MambaHuBERTForPretraining."""
    wavs = torch.as_tensor(wav, dtype=torch.float32, device=device)[None]
    feats, _ = model.backbone.feature_extractor(wavs)
    return feats[0].float().cpu().numpy()


def mfcc_features(wav: np.ndarray) -> np.ndarray:
    """wav (samples,) at 16 kHz -> 13 MFCCs with deltas and delta-deltas (frames, 39), on
    400-sample windows every 320 samples."""
    if len(wav) < _WINDOW:
        raise ValueError(f"audio of {len(wav)} samples is shorter than one {_WINDOW}-sample frame")
    transform = torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=13,
        melkwargs={"n_fft": _WINDOW, "hop_length": _HOP, "n_mels": 40, "center": False},
    )
    mfcc = transform(torch.as_tensor(wav, dtype=torch.float32))  # (13, frames)
    delta = torchaudio.functional.compute_deltas(mfcc)
    delta2 = torchaudio.functional.compute_deltas(delta)
    return torch.cat([mfcc, delta, delta2]).T.numpy()


def input_features(kind: str, model, wav: np.ndarray, device="cpu") -> np.ndarray:
    """The local input features ``kind`` ("mfcc" or "cnn") of wav: (frames, 39 or 512)."""
    if kind == "mfcc":
        return mfcc_features(wav)
    if kind == "cnn":
        return cnn_features(model, wav, device)
    raise ValueError(f"input features must be one of {INPUT_FEATURES}, got {kind!r}")
