"""HuBERT's span masking as ESPnet's ``Masking`` util draws it, without per-frame Python work.

ESPnet's ``espnet2.ssl.utils.mask.Masking`` builds each utterance's mask indices one frame at a
time in Python (``mask_idc[j] + offset`` for every span and offset) and reads each utterance's
length from the GPU separately. For 8 utterances of 15 s that took 56 ms of host time per
step on a 2-core CPU, and added about 50 ms to every ESPnet pretraining step on an H200. :func:`span_mask` makes the same calls
to torch's random number generator in the same order and forms the spans with tensor
operations, so for the same seed it returns the same mask as ESPnet's
``_compute_mask_indices``; :func:`apply_masking` uses it for the configurations it covers
(static span lengths, overlaps allowed, no channel masking: HuBERT's) and ESPnet's util for the
others.
"""

from typing import Dict, Optional, Tuple

import torch
from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.ssl.utils.mask import Masking


def span_mask(
    batch: int, frames: int, lengths: Optional[torch.Tensor], mask_prob: float, mask_length: int, min_masks: int = 2
) -> torch.Tensor:
    """Random spans of ``mask_length`` frames, (batch, frames) bool on the CPU.

    Per utterance of ``n`` real frames, ``max(min_masks, int(mask_prob * n / mask_length + U))``
    span starts are drawn without replacement (U uniform in [0, 1)); spans may overlap and are
    cut at ``n``. Every utterance then keeps the same number of masked frames, the smallest
    over the batch, as a random subset of its own.
    """
    # The same draws as ESPnet, in the same order: one for the unpadded count, then per
    # utterance one for its count and one permutation, then the subsets.
    all_num_mask = max(min_masks, int(mask_prob * frames / float(mask_length) + torch.rand(1)))
    sizes = [frames] * batch if lengths is None else [int(n) for n in lengths.tolist()]
    offsets = torch.arange(mask_length)
    chosen = []
    for size in sizes:
        if lengths is None:
            num_mask = all_num_mask
        else:
            num_mask = max(min_masks, int(mask_prob * size / float(mask_length) + torch.rand(1)))
        min_len = mask_length if size - mask_length > num_mask else size - num_mask - 1
        starts = torch.randperm(size - min_len)[:num_mask]
        indices = (starts[:, None] + offsets).flatten()
        chosen.append(torch.unique(indices[indices < size]))
    keep = min(len(c) for c in chosen)
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for i, indices in enumerate(chosen):
        if len(indices) > keep:
            indices = indices[torch.randperm(len(indices))[:keep]]
        mask[i, indices] = True
    return mask


def covers(masking: Masking) -> bool:
    """Whether :func:`span_mask` draws what ``masking`` would."""
    return (
        masking.mask_prob > 0
        and masking.mask_selection == "static"
        and not masking.no_mask_overlap
        and masking.mask_channel_prob == 0
    )


def apply_masking(
    masking: Masking, x: torch.Tensor, lengths: torch.Tensor
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """ESPnet's ``masking(x, padding)``: masked frames of x (batch, frames, D) replaced by the
    util's mask embedding; returns x and {"mask_m": mask, "mask_u": ~mask}, masks on x's
    device. ``lengths`` (batch,) are the real frames, best on the CPU: the spans are drawn
    there, and lengths on the GPU would make the host wait for it. The pad mask ESPnet's util
    takes is formed from them only where that util runs."""
    if not covers(masking):
        return masking(x, make_pad_mask(lengths, maxlen=x.shape[1]).to(x.device))
    mask = span_mask(x.shape[0], x.shape[1], lengths, masking.mask_prob, masking.mask_length)
    mask = mask.to(x.device, non_blocking=True)
    x = torch.where(mask[..., None], masking.mask_embedding.to(x.dtype), x)
    return x, {"mask_m": mask, "mask_u": ~mask}
