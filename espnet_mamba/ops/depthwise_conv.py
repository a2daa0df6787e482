"""Mamba's depthwise causal conv + SiLU as Triton kernels, with a backward pass, for CUDA
installs without causal-conv1d, and shapes its kernel does not take.

Our PyTorch conv (``causal_conv1d._depthwise_conv``) makes a padded copy and one pass over
memory per tap, and in the time-major mixer a transposing copy too: at 32k frames of
mamba_base it took about 25 ms of the 640 s forward on an H200, where causal-conv1d's kernel
took 1.1 ms (docs/benchmarks.md, 2026-12-03). Here each tensor is read and written once, in
any layout (strides are arguments):

* ``_conv_silu``: each program owns BLOCK_T frames x BLOCK_C channels of one sequence and
  sums the K taps in float32: y[t] = silu(bias + sum_k w[k] x[t - K + 1 + k]).
* ``_conv_silu_backward``: dx[t] = sum_k w[k] g[t + K - 1 - k], the conv run backwards in
  time over the gradient at its output, g = dy * silu'(pre). g is recomputed at each of the
  K frames from x (cached reads) rather than stored: one pass over memory. Each program also
  writes its partial sums of g x[t - K + 1 + k] (the weight's gradient, one row per tap) and
  of g (the bias's), summed afterwards by torch.

On an H200 in bfloat16 at E 2304 (tools/gpu_micro.py dw_conv, 2026-12-03): the forward takes
0.113 ms at 32768 frames against causal-conv1d's 0.096 and PyTorch's 1.68; forward +
backward 0.59-0.60 ms at 8 x 750 and 1 x 16000 frames against causal-conv1d's 0.39-0.41 and
PyTorch's 1.9-4.8. causal-conv1d therefore goes first where it is installed.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (the tests use this).
"""

from typing import Optional

import torch

from espnet_mamba.ops.backend import fits_32_bit_offsets, require_triton, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _preactivation(x_row, w_ptr, bias_ptr, frames, c, c_ok, length, stride_x_t,
                       TAPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr):
        """(BLOCK_T, BLOCK_C) float32: bias + sum_k w[c, k] x[frames - K + 1 + k, c], zeros
        before frame 0. x_row points at the sequence's channels c."""
        pre = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        if HAS_BIAS:
            pre += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        for k in tl.static_range(TAPS):
            src = frames - (TAPS - 1) + k
            ok = ((src >= 0) & (src < length))[:, None] & c_ok[None, :]
            window = tl.load(x_row + src[:, None] * stride_x_t, mask=ok, other=0.0).to(tl.float32)
            pre += window * tl.load(w_ptr + c * TAPS + k, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        return pre

    @triton.jit
    def _conv_silu(
        x_ptr, w_ptr, bias_ptr, y_ptr,
        length, channels, stride_x_b, stride_x_t, stride_x_c, stride_y_b, stride_y_t, stride_y_c,
        TAPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
        SILU: tl.constexpr,
    ):  # fmt: skip
        """Program (frame block, channel block, batch): y = silu(bias + sum_k w[:, k] x[t - K + 1 + k])."""
        pid_t, pid_c, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < channels
        x_row = x_ptr + batch * stride_x_b + c[None, :] * stride_x_c
        y = _preactivation(x_row, w_ptr, bias_ptr, t, c, c_ok, length, stride_x_t, TAPS, BLOCK_T, BLOCK_C, HAS_BIAS)
        if SILU:
            y = y * tl.sigmoid(y)
        y_at = y_ptr + batch * stride_y_b + t[:, None] * stride_y_t + c[None, :] * stride_y_c
        tl.store(y_at, y.to(y_ptr.dtype.element_ty), mask=(t < length)[:, None] & c_ok[None, :])

    @triton.jit
    def _conv_silu_backward(
        x_ptr, w_ptr, bias_ptr, dy_ptr, dx_ptr, partial_ptr,
        length, channels, stride_x_b, stride_x_t, stride_x_c, stride_dy_b, stride_dy_t, stride_dy_c,
        stride_dx_b, stride_dx_t, stride_dx_c,
        TAPS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
        SILU: tl.constexpr,
    ):  # fmt: skip
        """Program (frame block, channel block, batch): dx[t] = sum_k w[:, k] g[t + K - 1 - k],
        with g = dy * silu'(pre) recomputed at each of the K frames, and the program's row of
        partial (batch * frame blocks, K + 1, E): sum_t g[t] x[t - K + 1 + k] for each tap k,
        then sum_t g[t]."""
        pid_t, pid_c, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < channels
        x_row = x_ptr + batch * stride_x_b + c[None, :] * stride_x_c
        dy_row = dy_ptr + batch * stride_dy_b + c[None, :] * stride_dy_c
        dx = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for shift in tl.static_range(TAPS):  # g at frames t + shift meets tap K - 1 - shift
            frames = t + shift
            ok = (frames < length)[:, None] & c_ok[None, :]
            g = tl.load(dy_row + frames[:, None] * stride_dy_t, mask=ok, other=0.0).to(tl.float32)
            if SILU:
                pre = _preactivation(
                    x_row, w_ptr, bias_ptr, frames, c, c_ok, length, stride_x_t, TAPS, BLOCK_T, BLOCK_C, HAS_BIAS
                )  # fmt: skip
                sig = tl.sigmoid(pre)
                g = g * sig * (1.0 + pre * (1.0 - sig))
            dx += g * tl.load(w_ptr + c * TAPS + (TAPS - 1 - shift), mask=c_ok, other=0.0).to(tl.float32)[None, :]
            if shift == 0:
                row = partial_ptr + (batch * tl.num_programs(0) + pid_t) * (TAPS + 1) * channels + c
                for k in tl.static_range(TAPS):
                    src = t - (TAPS - 1) + k
                    src_ok = ((src >= 0) & (src < length))[:, None] & c_ok[None, :]
                    window = tl.load(x_row + src[:, None] * stride_x_t, mask=src_ok, other=0.0).to(tl.float32)
                    tl.store(row + k * channels, tl.sum(g * window, axis=0), mask=c_ok)
                tl.store(row + TAPS * channels, tl.sum(g, axis=0), mask=c_ok)
        dx_at = dx_ptr + batch * stride_dx_b + t[:, None] * stride_dx_t + c[None, :] * stride_dx_c
        tl.store(dx_at, dx.to(dx_ptr.dtype.element_ty), mask=(t < length)[:, None] & c_ok[None, :])


def _empty_in_layout(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised (batch, L, E) tensor of x's dtype, dense in x's order of L and E: E
    innermost where x's E has unit stride (time-major), else L (x a view of (batch, E, L))."""
    batch, length, channels = x.shape
    if x.stride(2) == 1:
        return torch.empty(batch, length, channels, device=x.device, dtype=x.dtype)
    return torch.empty(batch, channels, length, device=x.device, dtype=x.dtype).transpose(1, 2)


def _blocks(x: torch.Tensor, block_t: int, block_c: int):
    """The launch grid over x (batch, L, E) and its strides in that order."""
    batch, length, channels = x.shape
    return (triton.cdiv(length, block_t), triton.cdiv(channels, block_c), batch), x.stride()


class _DepthwiseConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu, block_t, block_c):
        y = _empty_in_layout(x)
        grid, x_strides = _blocks(x, block_t, block_c)
        _conv_silu[grid](
            x, weight, weight if bias is None else bias, y, x.shape[1], x.shape[2], *x_strides, *y.stride(),
            TAPS=weight.shape[1], BLOCK_T=block_t, BLOCK_C=block_c, HAS_BIAS=bias is not None, SILU=silu,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, bias)
        ctx.config = silu, block_t, block_c
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        silu, block_t, block_c = ctx.config
        taps, (batch, length, channels) = weight.shape[1], x.shape
        grid, x_strides = _blocks(x, block_t, block_c)
        partial = torch.empty(batch * grid[0], taps + 1, channels, device=x.device, dtype=torch.float32)
        dx = _empty_in_layout(x)
        _conv_silu_backward[grid](
            x, weight, weight if bias is None else bias, dy, dx, partial, length, channels, *x_strides,
            *dy.stride(), *dx.stride(), TAPS=taps, BLOCK_T=block_t, BLOCK_C=block_c, HAS_BIAS=bias is not None,
            SILU=silu,
        )  # fmt: skip
        sums = partial.sum(0)  # (K + 1, E)
        grad_weight = sums[:taps].t().to(weight.dtype)
        grad_bias = None if bias is None else sums[taps].to(bias.dtype)
        return dx, grad_weight, grad_bias, None, None, None


def depthwise_conv1d_silu(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], silu: bool = True,
    block_t: int = 32, block_c: int = 128,
) -> torch.Tensor:
    """y_t = silu(bias + sum_k weight[:, k] * x_{t - K + 1 + k}), zeros before frame 0, each
    channel on its own; differentiable.

    Args:
        x: (batch, L, E) in any layout: (batch, L, E) contiguous, or the time-major view of a
            (batch, E, L) tensor. weight: (E, K). bias: (E,) or None.
        silu: apply SiLU (False: the conv alone).

    Returns:
        (batch, L, E) in x's dtype, E or L innermost as in x; sums in float32. The gradients
        of weight and bias are summed in float32 and returned in their dtypes.
    """
    require_triton("the depthwise conv kernel")
    if (x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[2]
            or (bias is not None and bias.shape != (x.shape[2],))):  # fmt: skip
        raise ValueError(f"x (batch, L, E), weight (E, K) and bias (E,) expected, got {tuple(x.shape)}, "
                         f"{tuple(weight.shape)} and {None if bias is None else tuple(bias.shape)}")  # fmt: skip
    if not fits_32_bit_offsets(x):  # the output is dense, x may be a view of a larger tensor
        raise ValueError(f"the depthwise conv kernel indexes with 32-bit offsets: x of shape {tuple(x.shape)} "
                         f"and strides {x.stride()} spans too many elements; split the batch")  # fmt: skip
    return _DepthwiseConvSilu.apply(x, weight.contiguous(), bias, silu, block_t, block_c)
