"""The encoder blocks: Mamba (causal or bidirectional, optional FFN), Transformer, ConBiMamba.

Every block maps (batch, L, D) -> (batch, L, D) given the real lengths (batch,), and no real
frame depends on padding. Causal blocks also have ``forward_chunk(x, state)`` for streaming,
with state None before the first frame.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from espnet_mamba.nn.attention import SelfAttention
from espnet_mamba.nn.bidirectional import ExtBiMamba, InnBiMamba
from espnet_mamba.nn.mamba import Mamba


def zero_padding(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """x (batch, L, D) with frames at or beyond each length set to 0."""
    if lengths is None:
        return x
    valid = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
    return x * valid[..., None].to(x.dtype)


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


def build_mixer(kind: str, d_model: int, mamba_kwargs: dict, bi_combine: str = "sum") -> nn.Module:
    """A Mamba mixer by name: "mamba" (causal), "extbimamba" or "innbimamba"."""
    if kind == "mamba":
        return Mamba(d_model, **mamba_kwargs)
    if kind == "extbimamba":
        return ExtBiMamba(d_model, combine=bi_combine, **mamba_kwargs)
    if kind == "innbimamba":
        return InnBiMamba(d_model, **mamba_kwargs)
    raise ValueError(f"unknown Mamba mixer {kind!r}")


class PostNormResidual(nn.Module):
    """x -> LayerNorm(x + dropout(sublayer output)), the published Mamba-HuBERT layer form."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(update))


class MambaLayer(nn.Module):
    """A Mamba mixer sublayer, then an optional FFN sublayer (Mamba+MLP), both post-LN."""

    def __init__(self, d_model: int, mixer: nn.Module, ffn_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.mixer = mixer
        self.mixer_residual = PostNormResidual(d_model, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout) if ffn_dim else None
        self.ffn_residual = PostNormResidual(d_model, dropout) if ffn_dim else None
        self.causal = isinstance(mixer, Mamba) and not isinstance(mixer, InnBiMamba)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.ffn is None else self.ffn_residual(x, self.ffn(x))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        update = self.mixer(x) if self.causal else self.mixer(x, lengths)
        return self._ffn(self.mixer_residual(x, update))

    def forward_chunk(self, x: torch.Tensor, state):
        update, state = self.mixer.forward_chunk(x, state)
        return self._ffn(self.mixer_residual(x, update)), state


class TransformerLayer(nn.Module):
    """HuBERT Base's post-LN Transformer layer; ``causal`` adds the causal mask."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, causal: bool = False):
        super().__init__()
        self.attention = SelfAttention(d_model, heads, attention_dropout, causal)
        self.attention_residual = PostNormResidual(d_model, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.ffn_residual = PostNormResidual(d_model, dropout)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.attention_residual(x, self.attention(x, lengths))
        return self.ffn_residual(x, self.ffn(x))

    def forward_chunk(self, x: torch.Tensor, cache):
        update, cache = self.attention.forward_chunk(x, cache)
        x = self.attention_residual(x, update)
        return self.ffn_residual(x, self.ffn(x)), cache


class ConformerConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv (centred), LayerNorm, SiLU, pointwise conv.

    LayerNorm replaces the Conformer's BatchNorm so a frame's output never depends on the
    other utterances of its batch (padding invariance).
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float = 0.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv kernel size must be odd, got {kernel_size}")
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = F.glu(self.pointwise_in(x.transpose(1, 2)), dim=1)
        x = self.depthwise(zero_padding(x.transpose(1, 2), lengths).transpose(1, 2))
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        return self.dropout(self.pointwise_out(x).transpose(1, 2))


class ConBiMambaLayer(nn.Module):
    """A Conformer block with a bidirectional Mamba in place of self-attention (pre-LN):

    x + FFN/2, x + BiMamba, x + Conv, x + FFN/2, LayerNorm.
    """

    def __init__(self, d_model: int, mixer: nn.Module, ffn_dim: int, conv_kernel: int = 31,
                 dropout: float = 0.0):
        super().__init__()
        self.ffn1_norm, self.ffn1 = nn.LayerNorm(d_model), FeedForward(d_model, ffn_dim, dropout)
        self.mixer_norm, self.mixer = nn.LayerNorm(d_model), mixer
        self.conv_norm, self.conv = nn.LayerNorm(d_model), ConformerConvModule(d_model, conv_kernel, dropout)
        self.ffn2_norm, self.ffn2 = nn.LayerNorm(d_model), FeedForward(d_model, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + 0.5 * self.dropout(self.ffn1(self.ffn1_norm(x)))
        x = x + self.dropout(self.mixer(self.mixer_norm(x), lengths))
        x = x + self.conv(self.conv_norm(x), lengths)
        x = x + 0.5 * self.dropout(self.ffn2(self.ffn2_norm(x)))
        return self.final_norm(x)
