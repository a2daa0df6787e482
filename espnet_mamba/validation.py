"""Checks on audio given to the models; each failure names the problem."""

from typing import Optional

import torch

SAMPLE_RATE = 16000


def check_sample_rate(sample_rate: Optional[int]) -> None:
    if sample_rate is not None and int(sample_rate) != SAMPLE_RATE:
        raise ValueError(f"audio must be sampled at {SAMPLE_RATE} Hz, got {sample_rate} Hz: resample it first")


def check_waveforms(
    wavs: torch.Tensor,
    wav_lens: Optional[torch.Tensor],
    sample_rate: Optional[int],
    min_samples: int,
) -> torch.Tensor:
    """Validate a batch of mono waveforms (batch, samples); return the lengths (batch,).

    Raises ValueError for a wrong sample rate, more than one channel, an empty or too short
    utterance, or NaN/Inf samples.
    """
    check_sample_rate(sample_rate)
    if not torch.is_tensor(wavs) or not wavs.is_floating_point():
        raise ValueError("waveforms must be a floating-point tensor (batch, samples)")
    if wavs.dim() == 3:
        raise ValueError(
            f"waveforms must be mono (batch, samples); got shape {tuple(wavs.shape)} with "
            f"{wavs.shape[1]} channels: mix down or pick one channel"
        )
    if wavs.dim() != 2:
        raise ValueError(f"waveforms must have shape (batch, samples), got {tuple(wavs.shape)}")
    if wav_lens is None:
        wav_lens = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long, device=wavs.device)
    wav_lens = wav_lens.to(device=wavs.device, dtype=torch.long)
    if wavs.shape[0] == 0:
        raise ValueError("the batch is empty")
    if wav_lens.shape != (wavs.shape[0],) or int(wav_lens.max()) > wavs.shape[1]:
        raise ValueError(f"wav_lens {tuple(wav_lens.tolist())} do not fit waveforms of shape {tuple(wavs.shape)}")
    if min_samples and int(wav_lens.min()) == 0:
        raise ValueError(f"utterance {int(wav_lens.argmin())} of the batch is empty")
    if int(wav_lens.min()) < min_samples:
        i = int(wav_lens.argmin())
        raise ValueError(
            f"utterance {i} of the batch has {int(wav_lens[i])} samples; at least {min_samples} "
            f"({1000 * min_samples // SAMPLE_RATE} ms at 16 kHz) are needed for one frame"
        )
    if not torch.isfinite(wavs).all():
        raise ValueError("waveforms contain NaN or Inf samples")
    return wav_lens
