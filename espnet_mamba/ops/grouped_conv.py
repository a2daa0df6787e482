"""HuBERT's positional conv (grouped, many taps) as Triton kernels, with a backward pass.

cuDNN runs the 16-group, 128-tap conv of HuBERT Base as 16 separate convolutions: at 32k
frames on an H200 they take about 7.4 ms in float32 (TF32), its bfloat16 kernel is slower
still, and forward + backward of a batch of 8 x 749 frames takes 7.9 ms. Here the conv is an
implicit GEMM on tensor cores, time-major (batch, L, D), C being a group's channels padded to
a power of two:

* ``_grouped_conv``: each program owns BLOCK_T output frames of one group and accumulates, for
  each of the K taps, the (BLOCK_T x C) input window shifted by that tap times the tap's
  (C x C) weights. It is also the input gradient: the output gradient padded by K - 1 frames
  on both sides, convolved with the taps reversed and each tap's matrix transposed.
* ``_grouped_conv_weight_grad``: each program owns one (tap, group) and sums, over every
  frame block of the batch, the (C x BLOCK_T) shifted input times the (BLOCK_T x C) output
  gradient.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (the tests use this).
"""

import torch

from espnet_mamba.ops.backend import fits_32_bit_offsets, require_triton, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _grouped_conv(
        x_ptr, w_ptr, bias_ptr, out_ptr,
        length, stride_x_b, stride_x_t, stride_out_b, stride_out_t,
        GROUP: tl.constexpr, BLOCK_C: tl.constexpr, TAPS: tl.constexpr, BLOCK_T: tl.constexpr,
        HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        """Program (frame block, group, batch): out[t, g, :] = bias + sum_k x[t + k, g, :] W[g, k]."""
        pid_t, group, batch = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        c = tl.arange(0, BLOCK_C)
        t_ok, c_ok = t < length, c < GROUP
        channel = group * GROUP + c
        x_at = x_ptr + batch * stride_x_b + t[:, None] * stride_x_t + channel[None, :]
        w_at = w_ptr + (group * TAPS * BLOCK_C + c[:, None]) * BLOCK_C + c[None, :]  # (G, K, C, C)
        x_ok = t_ok[:, None] & c_ok[None, :]
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for k in range(TAPS):
            window = tl.load(x_at + k * stride_x_t, mask=x_ok, other=0.0)
            acc = tl.dot(window, tl.load(w_at + k * BLOCK_C * BLOCK_C), acc, input_precision="tf32")
        if HAS_BIAS:
            acc += tl.load(bias_ptr + channel, mask=c_ok, other=0.0)[None, :]
        out_at = out_ptr + batch * stride_out_b + t[:, None] * stride_out_t + channel[None, :]
        tl.store(out_at, acc, mask=x_ok)

    @triton.jit
    def _grouped_conv_weight_grad(
        x_ptr, grad_ptr, out_ptr,
        batch_size, length, stride_x_b, stride_x_t, stride_grad_b, stride_grad_t,
        GROUP: tl.constexpr, BLOCK_C: tl.constexpr, TAPS: tl.constexpr, BLOCK_T: tl.constexpr,
    ):  # fmt: skip
        """Program (tap, group): out[g, k] = sum over (batch, t) of x[t + k, g, :]^T grad[t, g, :]."""
        tap, group = tl.program_id(0), tl.program_id(1)
        c = tl.arange(0, BLOCK_C)
        c_ok = c < GROUP
        channel = group * GROUP + c
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=tl.float32)
        blocks = tl.cdiv(length, BLOCK_T)
        i = 0
        while i < batch_size * blocks:  # a while loop: Triton's interpreter cannot range() over an argument
            batch, t = i // blocks, (i % blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
            ok = (t < length)[:, None] & c_ok[None, :]
            x_at = x_ptr + batch * stride_x_b + (t[:, None] + tap) * stride_x_t + channel[None, :]
            grad_at = grad_ptr + batch * stride_grad_b + t[:, None] * stride_grad_t + channel[None, :]
            window = tl.load(x_at, mask=ok, other=0.0)
            acc = tl.dot(tl.trans(window), tl.load(grad_at, mask=ok, other=0.0), acc, input_precision="tf32")
            i += 1
        out_at = out_ptr + ((group * TAPS + tap) * BLOCK_C + c[:, None]) * BLOCK_C + c[None, :]
        tl.store(out_at, acc)


def _tap_matrices(weight: torch.Tensor, groups: int, block_c: int, dtype: torch.dtype) -> torch.Tensor:
    """nn.Conv1d's (D, D / groups, K) weight as (G, K, C_in, C_out) matrices, zero-padded to block_c."""
    _, group, taps = weight.shape
    matrices = weight.new_zeros(groups, taps, block_c, block_c, dtype=dtype)
    matrices[:, :, :group, :group] = weight.view(groups, group, group, taps).permute(0, 3, 2, 1)
    return matrices


def _launch_conv(x, matrices, bias, groups: int, group: int, block_t: int, num_warps: int, num_stages: int):
    """(batch, L + K - 1, D) -> (batch, L, D) float32 through ``_grouped_conv``."""
    batch, padded_length, channels = x.shape
    taps, block_c = matrices.shape[1], matrices.shape[-1]
    length = padded_length - taps + 1
    out = torch.empty(batch, length, channels, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(length, block_t), groups, batch)
    _grouped_conv[grid](
        x, matrices, out if bias is None else bias, out, length, x.stride(0), x.stride(1), out.stride(0),
        out.stride(1), GROUP=group, BLOCK_C=block_c, TAPS=taps, BLOCK_T=block_t, HAS_BIAS=bias is not None,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out


class _GroupedConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, block_t, num_warps, num_stages):
        group = weight.shape[1]
        block_c = max(16, triton.next_power_of_2(group))  # tensor-core products need 16 or more
        matrices = _tap_matrices(weight, groups, block_c, x.dtype)
        ctx.save_for_backward(x, matrices)
        ctx.config = groups, group, block_t, num_warps, num_stages
        ctx.weight_dtype, ctx.has_bias = weight.dtype, bias is not None
        return _launch_conv(x, matrices, None if bias is None else bias.float().contiguous(), groups, group,
                            block_t, num_warps, num_stages)  # fmt: skip

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, matrices = ctx.saved_tensors
        groups, group, block_t, num_warps, num_stages = ctx.config
        taps, block_c = matrices.shape[1], matrices.shape[-1]
        grad_x = grad_weight = grad_bias = None
        grad_low = grad.to(x.dtype)  # the products' dtype, as in the forward
        if ctx.needs_input_grad[0]:
            transposed = matrices.flip(1).transpose(2, 3).contiguous()
            padded = torch.nn.functional.pad(grad_low, (0, 0, taps - 1, taps - 1))
            grad_x = _launch_conv(padded, transposed, None, groups, group, block_t, num_warps, num_stages)
            grad_x = grad_x.to(x.dtype)
        if ctx.needs_input_grad[1]:
            sums = torch.empty(groups, taps, block_c, block_c, device=x.device, dtype=torch.float32)
            _grouped_conv_weight_grad[(taps, groups)](
                x, grad_low, sums, x.shape[0], grad.shape[1], x.stride(0), x.stride(1), grad_low.stride(0),
                grad_low.stride(1), GROUP=group, BLOCK_C=block_c, TAPS=taps, BLOCK_T=block_t,
                num_warps=num_warps,
            )  # fmt: skip
            grad_weight = sums[:, :, :group, :group].permute(0, 3, 2, 1).reshape(groups * group, group, taps)
            grad_weight = grad_weight.to(ctx.weight_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 1))
        return grad_x, grad_weight, grad_bias, None, None, None, None


def grouped_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, block_t: int = 128,
    num_warps: int = 4, num_stages: int = 3,
) -> torch.Tensor:
    """conv1d(x, weight, bias, groups=groups) on time-major tensors, differentiable.

    Args:
        x: (batch, L + K - 1, D), already padded: output frame t reads input frames t .. t + K - 1.
            Its dtype is the products': bfloat16, or float32, run as TF32; contiguous along D.
        weight: (D, D / groups, K), as nn.Conv1d's. bias: (D,).

    Returns:
        (batch, L, D), float32. The gradient of x is in x's dtype, those of weight and bias
        in theirs; the weight's is summed in float32.
    """
    require_triton("the grouped conv kernel")
    channels = x.shape[-1]
    group, taps = channels // groups, weight.shape[-1]
    if x.dim() != 3 or weight.shape != (channels, group, taps) or bias.shape != (channels,) or x.stride(2) != 1:
        raise ValueError(f"x (batch, L, {channels}) with unit stride on D, weight ({channels}, {group}, K) and bias "
                         f"({channels},) expected, got {tuple(x.shape)} strides {x.stride()}, {tuple(weight.shape)} "
                         f"and {tuple(bias.shape)}")  # fmt: skip
    if x.shape[1] < taps:
        raise ValueError(f"x has {x.shape[1]} frames, fewer than the {taps} taps of the conv")
    if not fits_32_bit_offsets(x):  # the output is dense, x may be a view of a larger tensor
        raise ValueError(f"the grouped conv kernel indexes with 32-bit offsets: x of shape {tuple(x.shape)} "
                         "is too large; split the batch")  # fmt: skip
    return _GroupedConv1d.apply(x, weight, bias, groups, block_t, num_warps, num_stages)
