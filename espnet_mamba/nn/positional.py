"""HuBERT's convolutional positional embedding, centred or causal."""

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


class ConvPositionalEmbedding(nn.Module):
    """Grouped conv over time, weight-normalised, then GELU: (batch, L, D) -> (batch, L, D).

    The caller adds the result to its input.

    Args:
        causal: False (HuBERT): kernel // 2 frames each side, i.e. 64 frames of look-ahead.
            True: kernel - 1 frames of left context only, so frame t sees frames <= t.
    """

    def __init__(self, d_model: int, kernel_size: int = 128, groups: int = 16, causal: bool = False):
        super().__init__()
        self.kernel_size, self.causal = kernel_size, causal
        conv = nn.Conv1d(d_model, d_model, kernel_size, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=(4.0 / (kernel_size * d_model)) ** 0.5)
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)

    def _pad(self) -> Tuple[int, int]:
        if self.causal:
            return self.kernel_size - 1, 0
        half = self.kernel_size // 2
        return half, half - 1  # fairseq's pad k // 2 on both sides then drop the last frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, L, D), zero at padded frames."""
        y = self.conv(F.pad(x.transpose(1, 2), self._pad()))
        return F.gelu(y).transpose(1, 2)

    def forward_chunk(self, x: torch.Tensor, history: Optional[torch.Tensor]):
        """Causal streaming: new frames x (batch, n, D) after ``history`` (batch, K - 1, D).

        Returns the output for the new frames and the new history.
        """
        if history is None:
            history = x.new_zeros(x.shape[0], self.kernel_size - 1, x.shape[2])
        window = torch.cat([history, x], dim=1)
        y = F.gelu(self.conv(window.transpose(1, 2))).transpose(1, 2)
        return y, window[:, window.shape[1] - (self.kernel_size - 1) :]
