"""HuBERT's positional conv (grouped, many taps) with its GELU, as one Triton kernel (inference).

cuDNN runs the 16-group, 128-tap conv of HuBERT Base as 16 separate convolutions; at 32k
frames on an H200 they take about 7.4 ms in float32 (TF32), and its bfloat16 kernel is slower
still. Here it is an implicit GEMM on tensor cores, time-major: each program owns BLOCK_T
output frames of one group and accumulates, for each of the K taps, the (BLOCK_T x C) input
window shifted by that tap times the tap's (C x C) weights, C being the group's channels padded
to a power of two. The GELU is applied before the one store. There is no autograd: training
keeps cuDNN. Under ``TRITON_INTERPRET=1`` the kernel runs on CPU tensors (the tests use this).
"""

import torch

from espnet_mamba.ops.backend import needs_autograd, triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _grouped_conv_gelu(
        x_ptr, w_ptr, bias_ptr, out_ptr,
        length, stride_x_b, stride_x_t, stride_out_b, stride_out_t,
        GROUP: tl.constexpr, BLOCK_C: tl.constexpr, TAPS: tl.constexpr, BLOCK_T: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """Program (frame block, group, batch): out[t, g, :] = gelu(bias + sum_k x[t + k, g, :] W[g, k])."""
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
            acc = tl.dot(window, tl.load(w_at + k * BLOCK_C * BLOCK_C), acc, input_precision=PRECISION)
        acc += tl.load(bias_ptr + channel, mask=c_ok, other=0.0)[None, :]
        y = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))  # exact GELU, as F.gelu
        out_at = out_ptr + batch * stride_out_b + t[:, None] * stride_out_t + channel[None, :]
        tl.store(out_at, y, mask=x_ok)


def grouped_conv1d_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, block_t: int = 128,
    num_warps: int = 4, num_stages: int = 3,
) -> torch.Tensor:
    """gelu(conv1d(x, weight, bias, groups=groups)) on time-major tensors, without autograd.

    Args:
        x: (batch, L + K - 1, D), already padded: output frame t reads input frames t .. t + K - 1.
            Its dtype is the products': bfloat16, or float32, run as TF32 where cuDNN may use
            TF32 for convolutions (``torch.backends.cudnn.allow_tf32``); contiguous along D.
        weight: (D, D / groups, K), as nn.Conv1d's. bias: (D,).

    Returns:
        (batch, L, D), float32.
    """
    if not triton_available():
        raise RuntimeError("the grouped conv kernel needs Triton, which is not installed on this platform")
    if needs_autograd(x, weight, bias):
        raise RuntimeError("the grouped conv kernel has no backward pass: call it under torch.no_grad()")
    batch, padded_length, channels = x.shape
    group, taps = channels // groups, weight.shape[-1]
    if weight.shape != (channels, group, taps) or x.stride(2) != 1:
        raise ValueError(f"x (batch, L, {channels}) with unit stride on D and weight ({channels}, {group}, K) "
                         f"expected, got {tuple(x.shape)} strides {x.stride()} and {tuple(weight.shape)}")  # fmt: skip
    length = padded_length - taps + 1
    block_c = max(16, triton.next_power_of_2(group))  # tensor-core products need 16 or more
    # (G, K, C_in, C_out), zero-padded to block_c: the product's right operand for each tap
    w = weight.view(groups, group, group, taps).permute(0, 3, 2, 1)
    padded = x.new_zeros(groups, taps, block_c, block_c)
    padded[:, :, :group, :group] = w.to(x.dtype)
    out = torch.empty(batch, length, channels, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(length, block_t), groups, batch)
    _grouped_conv_gelu[grid](
        x, padded, bias.float().contiguous(), out, length, x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        GROUP=group, BLOCK_C=block_c, TAPS=taps, BLOCK_T=block_t,
        PRECISION="ieee" if x.dtype == torch.float32 and not torch.backends.cudnn.allow_tf32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out
