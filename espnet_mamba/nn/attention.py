"""Multi-head self-attention (fairseq parameter names) with an optional causal mask and a
key/value cache for streaming."""

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

KVCache = Tuple[torch.Tensor, torch.Tensor]  # keys, values: (batch, heads, T_past, d_head)


class SelfAttention(nn.Module):
    """(batch, L, D) -> (batch, L, D) with ``heads`` heads.

    Args:
        causal: frame t attends to frames <= t only.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.d_head, self.causal, self.dropout = heads, d_model // heads, causal, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.d_head)).transpose(1, 2)  # (batch, H, L, d)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (batch, L, D); lengths (batch,) or None when no frame is padding.

        Without padding no mask is formed, so that SDPA can take its flash kernel (with a
        mask it falls back to kernels that are slower and, with dropout, hold (L, L) scores).
        """
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        steps = x.shape[1]
        allowed = None  # (batch or 1, 1, L, L), True where attention is allowed
        if lengths is not None:
            allowed = (torch.arange(steps, device=x.device)[None] < lengths[:, None])[:, None, None, :]
            if self.causal:
                allowed = allowed & torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and allowed is None,
        )  # fmt: skip
        return self.out_proj(y.transpose(1, 2).flatten(2))

    def forward_chunk(self, x: torch.Tensor, cache: Optional[KVCache]) -> Tuple[torch.Tensor, KVCache]:
        """Causal streaming: new frames x (batch, n, D) attend to the cache and to themselves."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        n, total = x.shape[1], k.shape[2]
        allowed = torch.ones(n, total, dtype=torch.bool, device=x.device).tril(total - n)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(y.transpose(1, 2).flatten(2)), (k, v)
