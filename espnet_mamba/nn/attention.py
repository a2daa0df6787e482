"""Multi-head self-attention (fairseq parameter names) with an optional causal mask and a
key/value cache for streaming."""

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

GrowingKVCache = Tuple[torch.Tensor, torch.Tensor]  # keys, values: (batch, heads, T_past, d_head)


@dataclass
class FixedKVCache:
    """Keys and values of up to ``capacity`` frames, and how many frames they hold, counted on
    the device: every step has the same shapes and reads no host value, so a CUDA graph can
    replay it. A step writes its frames into copies of the buffers (``index_copy``, out of
    place), so the cache it was given is left as it was.

    keys, values: (batch, heads, capacity, d_head); length: 0-d long tensor.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: torch.Tensor

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]


KVCache = Union[GrowingKVCache, FixedKVCache]


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

    def init_cache(self, batch: int, capacity: int, device=None, dtype=torch.float32) -> FixedKVCache:
        """An empty :class:`FixedKVCache` for ``capacity`` frames."""
        shape = (batch, self.heads, capacity, self.d_head)
        empty = torch.zeros(shape, device=device, dtype=dtype)
        return FixedKVCache(empty, empty.clone(), torch.zeros((), dtype=torch.long, device=device))

    def forward_chunk(self, x: torch.Tensor, cache: Optional[KVCache]) -> Tuple[torch.Tensor, KVCache]:
        """Causal streaming: new frames x (batch, n, D) attend to the cache and to themselves.

        ``cache``: None before the first frame, then the cache this returned; either a growing
        (keys, values) pair or a :class:`FixedKVCache`, which must have room for the n frames
        (the caller checks: here that would need the host to read its length).
        """
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        n = x.shape[1]
        if isinstance(cache, FixedKVCache):
            positions = cache.length + torch.arange(n, device=x.device)  # of the new frames
            keys = cache.keys.index_copy(2, positions, k.to(cache.keys.dtype))
            values = cache.values.index_copy(2, positions, v.to(cache.values.dtype))
            allowed = torch.arange(cache.capacity, device=x.device)[None] <= positions[:, None]  # (n, capacity)
            y = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=allowed)
            return self.out_proj(y.transpose(1, 2).flatten(2)), FixedKVCache(keys, values, cache.length + n)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        total = k.shape[2]
        allowed = torch.ones(n, total, dtype=torch.bool, device=x.device).tril(total - n)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(y.transpose(1, 2).flatten(2)), (k, v)
