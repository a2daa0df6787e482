"""Bidirectional Mamba mixers. The backward direction reverses each sequence within its own
length, so padding stays at the end and never enters a real frame's state."""

from typing import Optional

import torch
import torch.nn as nn

from espnet_mamba.nn.mamba import Mamba, pad_frames


def reversal_index(
    lengths: Optional[torch.Tensor], steps: int, device, frames: Optional[int] = None
) -> torch.Tensor:
    """The frame order that reverses each sequence within its length, frames past it staying put.

    lengths: (batch,), or None for sequences that all fill ``steps`` frames. ``frames``
    (>= steps, default steps): the frames of the tensors to reorder, e.g. padded by the kernel
    path. Returns (frames,) where lengths is None, else (batch, frames). Build it once and
    apply it to every tensor of the batch with :func:`reorder_frames`: building costs a few
    launches, each reordering one.
    """
    frames = steps if frames is None else frames
    t = torch.arange(frames, device=device)
    if lengths is None and frames == steps:
        return t.flip(0)
    end = steps if lengths is None else lengths.to(device)[:, None]
    return torch.where(t < end, end - 1 - t, t)


def reorder_frames(x: torch.Tensor, index: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """x (batch, ...) with its frames along ``dim`` taken in the order of ``index``
    ((L,), or (batch, L) for an order per sequence)."""
    if index.dim() == 1:
        return x.index_select(dim, index)
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
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
        if lengths is None:
            bwd = self.backward_mamba(x.flip(1)).flip(1)
        else:
            order = reversal_index(lengths, x.shape[1], x.device)
            bwd = reorder_frames(self.backward_mamba(reorder_frames(x, order)), order)
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
        if self.runs_chunked_scan(x):
            u, z = self.project_in_time_major(x)  # (batch, L, E) each
            y_fwd = self.ssm_time_major(u, z, "")
            order = reversal_index(lengths, steps, x.device)
            u_b, z_b = reorder_frames(u, order), reorder_frames(z, order)
            y_bwd = reorder_frames(self.ssm_time_major(u_b, z_b, "_b"), order)
            return self.out_proj(torch.lerp(y_fwd, y_bwd, 0.5))  # the mean of the two directions
        x = pad_frames(x)  # L' >= L frames; the padding stays at the end in both directions
        order = reversal_index(lengths, steps, x.device, frames=x.shape[1])
        u, z = self.project_in(x).chunk(2, dim=1)  # (batch, E, L') each
        y_fwd, _ = self.ssm(u, z, "")
        u_b, z_b = reorder_frames(u, order, dim=2), reorder_frames(z, order, dim=2)
        y_bwd = reorder_frames(self.ssm(u_b, z_b, "_b")[0], order, dim=2)
        return self.out_proj(torch.lerp(y_fwd, y_bwd, 0.5).transpose(1, 2))[:, :steps]
