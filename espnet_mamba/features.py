"""Frame features that HuBERT's k-means targets are computed from.

* iteration 0: 39-d Kaldi MFCC + delta + delta-delta at 100 Hz (torchaudio's kaldi MFCC),
* later iterations: one hidden state of a pretrained model at 50 Hz.
"""

import torch
import torchaudio

from espnet_mamba.model import MambaHuBERTForPretraining
from espnet_mamba.validation import SAMPLE_RATE


def mfcc_features(wav: torch.Tensor) -> torch.Tensor:
    """Waveform (samples,) -> (frames at 100 Hz, 39): 13 MFCC with deltas and delta-deltas."""
    mfcc = torchaudio.compliance.kaldi.mfcc(
        wav[None], sample_frequency=SAMPLE_RATE, use_energy=False, num_ceps=13
    )  # (frames, 13)
    delta = torchaudio.functional.compute_deltas(mfcc.T)
    delta2 = torchaudio.functional.compute_deltas(delta)
    return torch.cat([mfcc.T, delta, delta2], dim=0).T


def mfcc_label_rate(labels: torch.Tensor) -> torch.Tensor:
    """100 Hz MFCC-frame labels -> 50 Hz model-frame labels (every other frame).

    With Kaldi framing (25 ms window, 10 ms shift) an utterance of L samples has
    floor((L - 400) / 160) + 1 MFCC frames; every other one gives exactly the
    floor((L - 400) / 320) + 1 frames of the model.
    """
    return labels[::2]


@torch.no_grad()
def layer_features(model: MambaHuBERTForPretraining, wav: torch.Tensor, layer: int) -> torch.Tensor:
    """Waveform (samples,) -> hidden state ``layer`` (0 = input to block 1): (frames, D)."""
    num_states = model.cfg.num_layers + 1
    if not 0 <= layer < num_states:
        raise ValueError(f"layer must be in [0, {num_states - 1}] for this model, got {layer}")
    device = next(model.parameters()).device
    hidden_states, _ = model.extract_features(wav[None].to(device))
    return hidden_states[layer][0].float().cpu()
