"""Bidirectional Mamba mixers. The backward direction reverses each sequence within its own
length, so padding stays at the end and never enters a real frame's state."""

from typing import Optional

import torch
import torch.nn as nn

from espnet_mamba.nn.mamba import Mamba, pad_frames


def reverse_padded(x: torch.Tensor, lengths: Optional[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """Reverse x along ``dim`` within each sequence's length; padded positions stay put.

    x: (batch, ...) with time on ``dim``; lengths: (batch,) or None (all full length).
    The map is its own inverse.
    """
    if lengths is None:
        return x.flip(dim)
    steps = x.shape[dim]
    t = torch.arange(steps, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (batch, L)
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], steps
    return x.gather(dim, index.view(shape).expand_as(x))


class ExtBiMamba(nn.Module):
    """Two independent Mamba mixers, one on x and one on x reversed; (batch, L, D) -> same.

    ``combine="sum"`` adds the two outputs (the published Mamba-HuBERT code);
    ``combine="concat"`` concatenates them and projects 2D -> D ("Mamba in Speech").
    """

    def __init__(self, d_model: int, combine: str = "sum", **mamba_kwargs):
        super().__init__()
        if combine not in ("sum", "concat"):
            raise ValueError(f"combine must be 'sum' or 'concat', got {combine!r}")
        self.combine = combine
        self.forward_mamba = Mamba(d_model, **mamba_kwargs)
        self.backward_mamba = Mamba(d_model, **mamba_kwargs)
        self.proj = nn.Linear(2 * d_model, d_model) if combine == "concat" else None

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        fwd = self.forward_mamba(x)
        bwd = reverse_padded(self.backward_mamba(reverse_padded(x, lengths)), lengths)
        if self.proj is None:
            return fwd + bwd
        return self.proj(torch.cat([fwd, bwd], dim=-1))


class InnBiMamba(Mamba):
    """Vision Mamba's "v2" bidirectional block; (batch, L, D) -> same.

    One in_proj and one out_proj (so one gate z) shared by both directions; the backward
    scan has its own conv1d_b, x_proj_b, dt_proj_b, A_b_log and D_b. The two gated scan
    outputs are averaged before out_proj.
    """

    def __init__(self, d_model: int, conv_bias: bool = True, **mamba_kwargs):
        super().__init__(d_model, conv_bias=conv_bias, **mamba_kwargs)
        self._add_ssm_params("_b", conv_bias)
        self.reset_ssm_parameters("_b")

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        steps = x.shape[1]
        if lengths is None:
            lengths = torch.full((x.shape[0],), steps, device=x.device)
        if self.runs_chunked_scan(x):
            u, z = self.project_in_time_major(x)  # (batch, L, E) each
            y_fwd = self.ssm_time_major(u, z, "")
            u_b, z_b = reverse_padded(u, lengths), reverse_padded(z, lengths)
            y_bwd = reverse_padded(self.ssm_time_major(u_b, z_b, "_b"), lengths)
            return self.out_proj((y_fwd + y_bwd) / 2)
        u, z = self.project_in(pad_frames(x)).chunk(2, dim=1)  # (batch, E, L') each
        y_fwd, _ = self.ssm(u, z, "")
        u_b, z_b = reverse_padded(u, lengths, dim=2), reverse_padded(z, lengths, dim=2)
        y_bwd = reverse_padded(self.ssm(u_b, z_b, "_b")[0], lengths, dim=2)
        return self.out_proj(((y_fwd + y_bwd) / 2).transpose(1, 2))[:, :steps]
