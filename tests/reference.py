"""A plain frame-by-frame selective scan, the definition the optimised code is tested against.

Used by the tests only. Every step is written out as in the Mamba paper, with no chunking and
no cumulative sums, so it is slow but obviously right; it is differentiable with autograd.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    initial_state: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """For every frame t, in the dtype of ``u``:

        dt_t = softplus(delta_t + delta_bias)   (softplus only if ``delta_softplus``)
        h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
        y_t  = C_t . h_t + D * u_t
        out_t = y_t * silu(z_t)                 (gate only if z is given)

    Shapes: u, delta, z (batch, E, L); A (E, N); B, C (batch, N, L); D, delta_bias (E,);
    initial_state (batch, E, N), zeros if None.

    Returns out (batch, E, L) and the last state h_L (batch, E, N).
    """
    batch, channels, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, channels, A.shape[1]) if initial_state is None else initial_state
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (batch, E, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        y = (h * C[:, None, :, t]).sum(-1)  # (batch, E)
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * F.silu(z[:, :, t])
        ys.append(y)
    out = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    return out, h
