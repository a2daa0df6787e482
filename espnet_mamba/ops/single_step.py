"""Mamba's one-frame streaming step as two Triton kernels, for CUDA installs without mamba-ssm
and causal-conv1d, whose single-step kernels go first where they are installed.

A 20 ms step of a causal model gives each Mamba block one frame. On PyTorch ops, the depthwise
conv's update and the selective scan of one frame are some 20 elementwise ops a block (counted
by torch's profiler on CPU), and a mamba_base step replayed from a CUDA graph took 1.06 ms on
an H100. Here each is one kernel, and each tensor is read and written once; that step now takes
0.69 ms (docs/benchmarks.md, 2026-12-07):

* ``_conv_step``: the window of the last K inputs (the K - 1 of the state, then this frame's),
  y = act(bias + sum_k w[:, k] window[k]) in float32, and the window's last K - 1 inputs as
  the new state.
* ``_state_step``: dt = softplus(delta + delta_bias); h = exp(dt A) h + dt u B;
  y = (C . h + D u) silu(z); the new state h in float32.

Both write new tensors and leave the given states as they are, so a step replayed from a CUDA
graph, or run again, starts from the same state. Under ``TRITON_INTERPRET=1`` the kernels run
on CPU tensors (the tests use this).
"""

from typing import Optional, Tuple

import torch

from espnet_mamba.ops.backend import fits_32_bit_offsets, needs_autograd, require_triton, triton_available

_CONV_BLOCK_C = 256  # channels a program: mamba_base's 2304 in 9 programs a sequence
_STATE_BLOCK_E = 32  # channels a program, each with its (padded) states: 32 x 32 at d_state 24

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _conv_step(
        x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr, new_state_ptr, channels,
        stride_x_b, stride_x_c, stride_s_b, stride_s_c, stride_s_k,
        TAPS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
        SILU: tl.constexpr,
    ):  # fmt: skip
        """Program (sequence, channel block): y (batch, E) and the new state (batch, E, K - 1),
        both contiguous, of x (batch, E) after the state (batch, E, K - 1)."""
        batch, pid_c = tl.program_id(0), tl.program_id(1)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        k = tl.arange(0, BLOCK_K)  # position in the window; TAPS - 1 is this frame
        c_ok = c < channels
        past = tl.load(state_ptr + batch * stride_s_b + c[:, None] * stride_s_c + k[None, :] * stride_s_k,
                       mask=c_ok[:, None] & (k < TAPS - 1)[None, :], other=0.0)  # fmt: skip
        now = tl.load(x_ptr + batch * stride_x_b + c * stride_x_c, mask=c_ok, other=0.0)
        window = tl.where((k == TAPS - 1)[None, :], now[:, None], past.to(now.dtype))  # (BLOCK_C, BLOCK_K)
        w = tl.load(w_ptr + c[:, None] * TAPS + k[None, :], mask=c_ok[:, None] & (k < TAPS)[None, :], other=0.0)
        y = tl.sum(window.to(tl.float32) * w.to(tl.float32), axis=1)
        if HAS_BIAS:
            y += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + batch * channels + c, y.to(y_ptr.dtype.element_ty), mask=c_ok)
        shifted = new_state_ptr + (batch * channels + c[:, None]) * (TAPS - 1) + (k[None, :] - 1)
        tl.store(shifted, window, mask=c_ok[:, None] & ((k >= 1) & (k < TAPS))[None, :])

    @triton.jit
    def _state_step(
        state_ptr, u_ptr, delta_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, y_ptr, new_state_ptr,
        channels, states, stride_u_b, stride_u_e, stride_delta_b, stride_delta_e, stride_b_b, stride_b_n,
        stride_c_b, stride_c_n, stride_z_b, stride_z_e,
        BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        """Program (sequence, channel block): y (batch, E) and the new state (batch, E, N), both
        contiguous, of one frame after the contiguous state (batch, E, N)."""
        batch, pid_e = tl.program_id(0), tl.program_id(1)
        e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        n = tl.arange(0, BLOCK_N)
        e_ok, n_ok = e < channels, n < states
        tile_ok = e_ok[:, None] & n_ok[None, :]
        tile = (batch * channels + e[:, None]) * states + n[None, :]
        h = tl.load(state_ptr + tile, mask=tile_ok, other=0.0)
        u = tl.load(u_ptr + batch * stride_u_b + e * stride_u_e, mask=e_ok, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + batch * stride_delta_b + e * stride_delta_e, mask=e_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + e, mask=e_ok, other=0.0)
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)  # softplus, x itself above torch's threshold
        A = tl.load(a_ptr + e[:, None] * states + n[None, :], mask=tile_ok, other=0.0)
        B = tl.load(b_ptr + batch * stride_b_b + n * stride_b_n, mask=n_ok, other=0.0).to(tl.float32)
        C = tl.load(c_ptr + batch * stride_c_b + n * stride_c_n, mask=n_ok, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B[None, :]
        tl.store(new_state_ptr + tile, h, mask=tile_ok)
        y = tl.sum(h * C[None, :], axis=1)
        if HAS_D:
            y += tl.load(d_ptr + e, mask=e_ok, other=0.0) * u
        if HAS_Z:
            z = tl.load(z_ptr + batch * stride_z_b + e * stride_z_e, mask=e_ok, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + batch * channels + e, y.to(y_ptr.dtype.element_ty), mask=e_ok)


def _check_runnable(what: str, *tensors: Optional[torch.Tensor]) -> None:
    """A clear error where the kernel cannot run: no Triton, autograd, or 32-bit offsets overrun."""
    require_triton(f"the {what} kernel")
    tensors = [t for t in tensors if t is not None]
    if needs_autograd(*tensors):
        raise ValueError(f"the {what} kernel computes no gradients; under autograd run the PyTorch step, or call "
                         "it under torch.no_grad()")  # fmt: skip
    if not fits_32_bit_offsets(*tensors):
        raise ValueError(f"the {what} kernel indexes with 32-bit offsets; split the batch")


def depthwise_conv1d_step(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of the depthwise causal conv: y = silu(bias + sum_k weight[:, k] window[k]),
    the window being the K - 1 inputs of ``conv_state`` and then x. No gradients.

    Args:
        x: (batch, E), any strides. conv_state: (batch, E, K - 1), the last K - 1 inputs.
        weight: (E, K). bias: (E,) or None. silu: apply SiLU (False: the conv alone).

    Returns:
        y (batch, E) and the new state (batch, E, K - 1), both in x's dtype; sums in float32.
    """
    _check_runnable("depthwise conv step", x, conv_state, weight, bias)
    fits = x.dim() == weight.dim() == 2 and weight.shape[0] == x.shape[1]
    fits = fits and conv_state.shape == (*x.shape, weight.shape[1] - 1)
    if not fits or (bias is not None and bias.shape != (x.shape[1],)):
        raise ValueError(f"x (batch, E), conv_state (batch, E, K - 1), weight (E, K) and bias (E,) expected, got "
                         f"{tuple(x.shape)}, {tuple(conv_state.shape)}, {tuple(weight.shape)} and "
                         f"{None if bias is None else tuple(bias.shape)}")  # fmt: skip
    (batch, channels), taps = x.shape, weight.shape[1]
    y = torch.empty(batch, channels, device=x.device, dtype=x.dtype)
    new_state = torch.empty(batch, channels, taps - 1, device=x.device, dtype=x.dtype)
    _conv_step[(batch, triton.cdiv(channels, _CONV_BLOCK_C))](
        x, conv_state, weight.contiguous(), weight if bias is None else bias, y, new_state, channels, *x.stride(),
        *conv_state.stride(), TAPS=taps, BLOCK_C=_CONV_BLOCK_C, BLOCK_K=triton.next_power_of_2(taps),
        HAS_BIAS=bias is not None, SILU=silu,
    )  # fmt: skip
    return y, new_state


def selective_state_step(
    state: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of the selective scan, dt = softplus(delta + delta_bias). No gradients.

    Args:
        state: (batch, E, N) before the frame. u, delta, z: (batch, E), any strides.
        A: (E, N). B, C: (batch, N), any strides. D, delta_bias: (E,).

    Returns:
        y (batch, E) in u's dtype, and the new state (batch, E, N) in float32.
    """
    _check_runnable("selective state step", state, u, delta, A, B, C, D, z, delta_bias)
    if u.dim() != 2 or A.dim() != 2:
        raise ValueError(f"u (batch, E) and A (E, N) expected, got {tuple(u.shape)} and {tuple(A.shape)}")
    (batch, channels), states = u.shape, A.shape[1]
    shapes = {"delta": (delta, (batch, channels)), "A": (A, (channels, states)), "B": (B, (batch, states)),
              "C": (C, (batch, states)), "state": (state, (batch, channels, states)), "z": (z, (batch, channels)),
              "D": (D, (channels,)), "delta_bias": (delta_bias, (channels,))}  # fmt: skip
    for name, (tensor, shape) in shapes.items():
        if tensor is not None and tensor.shape != shape:
            raise ValueError(f"{name} must be {shape} for u {tuple(u.shape)} and A {tuple(A.shape)}, "
                             f"got {tuple(tensor.shape)}")  # fmt: skip
    y = torch.empty(batch, channels, device=u.device, dtype=u.dtype)
    new_state = torch.empty(batch, channels, states, device=u.device, dtype=torch.float32)
    _state_step[(batch, triton.cdiv(channels, _STATE_BLOCK_E))](
        state.float().contiguous(), u, delta, A.float().contiguous(), B, C,
        u if D is None else D.float(), u if z is None else z, u if delta_bias is None else delta_bias.float(),
        y, new_state, channels, states, *u.stride(), *delta.stride(), *B.stride(), *C.stride(),
        *(u if z is None else z).stride(),
        BLOCK_E=_STATE_BLOCK_E, BLOCK_N=max(2, triton.next_power_of_2(states)), HAS_D=D is not None,
        HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
    )  # fmt: skip
    return y, new_state
