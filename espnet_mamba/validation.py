"""Checks on audio given to the models; each failure names the problem."""

from typing import Optional, Tuple

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
    """Validate a batch of mono waveforms (batch, samples); return the lengths (batch,) on the
    waveforms' device. See :func:`checked_lengths`."""
    return checked_lengths(wavs, wav_lens, sample_rate, min_samples)[0]


def checked_lengths(
    wavs: torch.Tensor,
    wav_lens: Optional[torch.Tensor],
    sample_rate: Optional[int],
    min_samples: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate a batch of mono waveforms (batch, samples); return the lengths (batch,) on the
    waveforms' device and on the CPU.

    The checks read the device once, the lengths and a NaN/Inf flag in one transfer, so that
    nothing after them waits for the GPU (the frame lengths follow from the CPU copy). Meta
    tensors, which have no values, get the shape checks only; meta wav_lens come back twice.

    Raises ValueError for a wrong sample rate, more than one channel, an empty or too short
    utterance, NaN/Inf samples, or lengths that are not integers.
    """
    check_sample_rate(sample_rate)
    if not torch.is_tensor(wavs) or not wavs.is_floating_point():
        raise ValueError("waveforms must be a floating-point tensor (batch, samples)")
    if wavs.dim() == 3:
        raise ValueError(
            f"waveforms must be mono (batch, samples), got shape {tuple(wavs.shape)}: mix several channels down "
            "or pick one, or squeeze an axis of size 1"
        )
    if wavs.dim() != 2:
        raise ValueError(f"waveforms must have shape (batch, samples), got {tuple(wavs.shape)}")
    if wavs.shape[0] == 0:
        raise ValueError("the batch is empty")
    batch, samples = wavs.shape
    finite = torch.isfinite(wavs).all()
    if wav_lens is None:
        lengths = torch.full((batch,), samples, dtype=torch.long, device=wavs.device)
        values, all_finite = [samples] * batch, wavs.is_meta or bool(finite)
    else:
        if wav_lens.is_floating_point():
            raise ValueError("wav_lens must be integer sample counts, got floating-point values (relative lengths? "
                             "multiply them by the padded length and round)")  # fmt: skip
        lengths = wav_lens.to(device=wavs.device, dtype=torch.long)
        if lengths.shape != (batch,):
            raise ValueError(
                f"wav_lens of shape {tuple(lengths.shape)} do not fit waveforms of shape {tuple(wavs.shape)}"
            )
        if wavs.is_meta or lengths.is_meta:
            return lengths, lengths
        *values, all_finite = torch.cat([lengths, finite.long()[None]]).tolist()
    if max(values) > samples:
        raise ValueError(f"wav_lens {tuple(values)} do not fit waveforms of shape {tuple(wavs.shape)}")
    shortest = min(values)
    if min_samples and shortest == 0:
        raise ValueError(f"utterance {values.index(0)} of the batch is empty")
    if shortest < min_samples:
        raise ValueError(
            f"utterance {values.index(shortest)} of the batch has {shortest} samples; at least {min_samples} "
            f"({1000 * min_samples // SAMPLE_RATE} ms at 16 kHz) are needed for one frame"
        )
    if not all_finite:
        raise ValueError("waveforms contain NaN or Inf samples")
    return lengths, torch.tensor(values, dtype=torch.long)
