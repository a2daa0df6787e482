"""HuBERT's convolutional positional embedding, centred or causal."""

import contextlib
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from espnet_mamba.ops import grouped_conv1d, triton_available
from espnet_mamba.ops.backend import autocast_dtype, fits_32_bit_offsets


class ConvPositionalEmbedding(nn.Module):
    """Grouped conv over time, weight-normalised, then GELU: (batch, L, D) -> (batch, L, D).

    The caller adds the result to its input.

    Args:
        causal: False (HuBERT): kernel // 2 frames each side, i.e. 64 frames of look-ahead.
            True: kernel - 1 frames of left context only, so frame t sees frames <= t.
    """

    def __init__(self, d_model: int, kernel_size: int = 128, groups: int = 16, causal: bool = False):
        super().__init__()
        self.kernel_size, self.groups, self.causal = kernel_size, groups, causal
        conv = nn.Conv1d(d_model, d_model, kernel_size, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=(4.0 / (kernel_size * d_model)) ** 0.5)
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)

    def _pad(self) -> Tuple[int, int]:
        if self.causal:
            return self.kernel_size - 1, 0
        half = self.kernel_size // 2
        return half, self.kernel_size - 1 - half  # fairseq: k // 2 each side, less the last frame if k is even

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, L, D), zero at padded frames -> (batch, L, D), float32.

        On CUDA the conv runs our Triton kernels (:mod:`espnet_mamba.ops.grouped_conv`, with
        a backward pass) on products in the autocast dtype, or in TF32 where cuDNN may use it.
        Elsewhere (CPU, exact float32, no Triton, or inputs past the kernels' 32-bit offsets) it
        is nn.Conv1d in float32.
        """
        dtype = autocast_dtype(x)
        if x.is_cuda and triton_available() and (dtype != torch.float32 or torch.backends.cudnn.allow_tf32):
            padded = F.pad(x.to(dtype), (0, 0, *self._pad()))
            if fits_32_bit_offsets(padded):
                return F.gelu(grouped_conv1d(padded, self.conv.weight, self.conv.bias, self.groups))
        with torch.autocast("cuda", enabled=False) if x.is_cuda else contextlib.nullcontext():
            y = self.conv(F.pad(x.float().transpose(1, 2), self._pad()))
        return F.gelu(y).transpose(1, 2)

    def forward_chunk(self, x: torch.Tensor, history: Optional[torch.Tensor], weight: Optional[torch.Tensor] = None):
        """Causal streaming: new frames x (batch, n, D) after ``history`` (batch, K - 1, D).

        Each new frame is one (K x D/groups) window per group times its weights: no
        convolution call, so no per-group launches for a one-frame step. ``weight``: the
        conv's weight, if the caller keeps it from step to step (None: computed here).
        Returns the output for the new frames and the new history.
        """
        if history is None:
            history = x.new_zeros(x.shape[0], self.kernel_size - 1, x.shape[2])
        if weight is None:
            weight = self.conv.weight
        window = torch.cat([history, x], dim=1)  # (batch, K - 1 + n, D)
        batch, n, d = x.shape
        frames = window.unfold(1, self.kernel_size, 1).reshape(batch, n, self.groups, d // self.groups, -1)
        weight = weight.view(self.groups, d // self.groups, d // self.groups, self.kernel_size)
        y = torch.einsum("bngck,gock->bngo", frames, weight.to(frames.dtype)).reshape(batch, n, d)
        y = F.gelu(y + self.conv.bias.to(y.dtype))
        return y, window[:, window.shape[1] - (self.kernel_size - 1) :]
