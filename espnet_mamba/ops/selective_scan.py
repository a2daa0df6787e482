"""The selective scan of Mamba: one function, the mamba-ssm kernel or our exact PyTorch code.

For each channel e and state n, with dt = softplus(delta + delta_bias):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t = C_t . h_t + D * u_t,      out = y * silu(z)

The PyTorch path works on chunks of ``chunk_size`` frames. Inside a chunk, with S_t the running
sum of the log decays dt*A (S_t <= 0),

    h_t = exp(S_t) * (h_0 + sum_{s <= t} exp(-S_s) * dt_s * B_s * u_s),

two cumulative sums and no Python loop per frame. Where exp(-S_s) would overflow float32
(decays below e^-88 within one chunk) the chunk is split in halves, down to single frames,
so the result is exact for any input.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_mamba.ops.backend import check_impl, mamba_kernels, use_kernel


def selective_scan(
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
    return_last_state: bool = False,
    impl: str = "auto",
    chunk_size: int = 16,
):
    """Run the selective scan.

    Args:
        u, delta: (batch, channels E, length L).
        A: (E, N), negative. B, C: (batch, N, L). D, delta_bias: (E,). z: (batch, E, L).
        initial_state: (batch, E, N) state before the first frame (zeros if None). The
            mamba-ssm kernel has no initial state, so giving one selects the PyTorch path.
        impl: "auto", "kernel" or "torch" (see :mod:`espnet_mamba.ops.backend`).

    Returns:
        out (batch, E, L) in u's dtype, and the last state (batch, E, N) in float32 when
        ``return_last_state``.
    """
    check_impl(impl)
    if initial_state is None and use_kernel(impl, u, "selective_scan"):
        return mamba_kernels()["selective_scan_fn"](
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    out, last = _selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size
    )
    return (out, last) if return_last_state else out


def _selective_scan_torch(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size
) -> Tuple[torch.Tensor, torch.Tensor]:
    dtype = u.dtype
    batch, channels, length = u.shape
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    log_decay = torch.einsum("bel,en->blen", delta, A)  # (batch, L, E, N), <= 0
    drive = torch.einsum("bel,bnl->blen", delta * u, B)  # (batch, L, E, N)
    if initial_state is None:
        state = u.new_zeros(batch, channels, A.shape[1])
    else:
        state = initial_state.float()
    ys = []
    for start in range(0, length, chunk_size):
        states = _scan_chunk(log_decay[:, start : start + chunk_size], drive[:, start : start + chunk_size], state)
        ys.append(torch.einsum("bten,bnt->bet", states, C[:, :, start : start + chunk_size]))
        state = states[:, -1]
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype), state


def _scan_chunk(log_decay: torch.Tensor, drive: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """h_t = exp(log_decay_t) * h_{t-1} + drive_t for a chunk: (batch, T, E, N) -> all h_t."""
    cum = log_decay.cumsum(1)
    steps = log_decay.shape[1]
    if steps == 1:
        return cum.exp() * state[:, None] + drive
    scaled = (torch.exp(-cum) * drive).cumsum(1)
    # an overflow (inf, or nan from inf - inf) persists through a cumulative sum, so checking
    # the last partial sums checks them all
    if torch.isfinite(scaled[:, -1]).all():
        return cum.exp() * (state[:, None] + scaled)
    half = steps // 2
    first = _scan_chunk(log_decay[:, :half], drive[:, :half], state)
    return torch.cat([first, _scan_chunk(log_decay[:, half:], drive[:, half:], first[:, -1])], dim=1)
