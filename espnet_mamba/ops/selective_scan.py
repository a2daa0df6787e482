"""The selective scan of Mamba: one function, the mamba-ssm kernel or our exact PyTorch code.

For each channel e and state n, with dt = softplus(delta + delta_bias):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t = C_t . h_t + D * u_t,      out = y * silu(z)

The PyTorch path runs this recurrence frame by frame, one fused multiply-add over the
(batch, E, N) state per frame; it is exact for any input (no cumulative sums, no overflow
guard). Two forms of it:

- with autograd, or on a GPU, the decays, inputs and outputs are formed ``chunk_size``
  frames at a time, so memory stays at (batch, chunk_size, E, N) for any length and every
  state is kept for the backward pass;
- on CPU without autograd (inference, streaming), each frame's decay and input are formed
  in two (batch, E, N) buffers and the state is updated in place. Nothing of size
  (batch, T, E, N) is allocated, so the working set stays in the CPU's cache: for one
  640 ms chunk of mamba_base (32 frames, E 2304, N 24) on 2 CPU cores, about 10 -> 4.5 ms
  per block. (On a GPU it would launch four kernels a frame instead of one.)
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_mamba.ops.backend import check_impl, mamba_kernels, needs_autograd, use_kernel, use_triton
from espnet_mamba.ops.single_step import selective_state_step


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


def selective_state_update(
    state: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of :func:`selective_scan` after ``state``, with dt = softplus(delta +
    delta_bias), for streaming. ``state`` is left as it is.

    Args:
        state: (batch, E, N). u, delta, z: (batch, E). A: (E, N). B, C: (batch, N).
            D, delta_bias: (E,).
        impl: "auto" and "kernel" run, on CUDA and where nothing needs a gradient, mamba-ssm's
            single-step kernel where it imports, else ours (``selective_state_step``); "torch",
            or under autograd, our PyTorch scan on one frame.

    Returns:
        y (batch, E) in u's dtype and the new state (batch, E, N) in float32.
    """
    check_impl(impl)
    inputs = [t for t in (state, u, delta, A, B, C, D, z, delta_bias) if t is not None]
    if not needs_autograd(*inputs):  # the kernels have no backward
        if use_kernel(impl, u, "selective_state_update", requires="selective_state_update"):
            new_state = state.to(torch.float32, copy=True)  # the kernel updates the state in place
            y = mamba_kernels()["selective_state_update"](
                new_state, u, delta, A, B, C, D, z=z, dt_bias=delta_bias, dt_softplus=True
            )  # fmt: skip
            return y, new_state
        if use_triton(impl, u, "selective_state_update"):
            return selective_state_step(state, u, delta, A, B, C, D, z, delta_bias)
    y, new_state = _selective_scan_torch(
        u[..., None], delta[..., None], A, B[..., None], C[..., None], D, None if z is None else z[..., None],
        delta_bias, True, state, chunk_size=1,
    )  # fmt: skip
    return y[..., 0], new_state


def _selective_scan_torch(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size
) -> Tuple[torch.Tensor, torch.Tensor]:
    dtype = u.dtype
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if initial_state is None:
        state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    else:
        state = initial_state.float()
    in_place = not needs_autograd(u, delta, A, B, C, state) and u.device.type == "cpu"  # on a GPU, fewer launches win
    recurrence = _recurrence_in_place if in_place else _recurrence_chunked
    y, state = recurrence(u, delta, A, B, C, state, chunk_size)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype), state


def _recurrence_chunked(u, delta, A, B, C, state, chunk_size) -> Tuple[torch.Tensor, torch.Tensor]:
    """y (batch, E, L) = C . h and the last state, differentiable. Inputs float32, state
    (batch, E, N) the state before the first frame."""
    batch, channels, length = u.shape
    ys = []
    for start in range(0, length, chunk_size):
        frames = slice(start, start + chunk_size)
        dt = delta[..., frames].transpose(1, 2)[..., None]  # (batch, T, E, 1)
        decay = (dt * A).exp()  # (batch, T, E, N)
        drive = dt * u[..., frames].transpose(1, 2)[..., None] * B[..., frames].transpose(1, 2)[:, :, None, :]
        states = []
        for t in range(decay.shape[1]):
            state = torch.addcmul(drive[:, t], decay[:, t], state)
            states.append(state)
        ys.append(torch.einsum("bten,bnt->bet", torch.stack(states, 1), C[..., frames]))
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)
    return y, state


def _recurrence_in_place(u, delta, A, B, C, state, chunk_size) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same as :func:`_recurrence_chunked` without autograd, one frame at a time in
    (batch, N, E) buffers, E innermost so that every product runs along unit strides
    (``chunk_size`` does not apply)."""
    state = state.transpose(1, 2).contiguous()  # (batch, N, E)
    decay, drive = torch.empty_like(state), torch.empty_like(state)
    A = A.t().contiguous()  # (N, E)
    y = u.new_empty(u.shape[2], u.shape[0], 1, u.shape[1])  # (L, batch, 1, E)
    frames = zip(
        _time_first(delta).unsqueeze(2),  # (batch, 1, E) per frame
        _time_first(delta * u).unsqueeze(2),
        _time_first(B).unsqueeze(-1),  # (batch, N, 1)
        _time_first(C).unsqueeze(2),  # (batch, 1, N)
        y,
    )
    for delta_t, delta_u_t, B_t, C_t, y_t in frames:
        torch.mul(delta_t, A, out=decay).exp_()
        torch.mul(B_t, delta_u_t, out=drive)
        torch.addcmul(drive, decay, state, out=state)
        torch.bmm(C_t, state, out=y_t)
    return y[:, :, 0].permute(1, 2, 0), state.transpose(1, 2).contiguous()


def _time_first(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, L) -> (L, batch, C), contiguous: one frame's slice is one block of memory."""
    return x.permute(2, 0, 1).contiguous()
