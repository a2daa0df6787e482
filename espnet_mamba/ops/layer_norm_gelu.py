"""LayerNorm over channels followed by GELU as Triton kernels, with a backward pass: the
per-frame norm of the causal models' waveform CNN (``layer_norm`` extractor mode).

Eager PyTorch runs this end of a CNN layer as four passes over the CNN's largest tensors:
under autocast the bfloat16 conv output is copied to float32 for the norm, the norm writes
float32, GELU reads and writes float32, and the cast for the next conv writes bfloat16; the
backward makes as many. Those copies, norms and GELUs took about 11 ms of mamba_base's 63 ms
training step at 8 x 15 s on an H200, where transformer_base's GroupNorm CNN has one norm.
Here each pass reads its inputs once and writes once, in the input's dtype, with float32
arithmetic. On an H200 in bfloat16 at 8 x 47999 frames x 512 channels (tools/gpu_micro.py
cnn_norm, docs/benchmarks.md, 2026-12-03): forward 0.345 ms against PyTorch's 2.03, forward +
backward 1.25 against 4.33.

* ``_layer_norm_gelu``: each program owns BLOCK_R rows (frames) of C channels:
  y = gelu(w * (x - mean) / sqrt(var + eps) + b), GELU's exact (erf) form, as ``F.gelu``.
  Under autograd it also keeps each row's mean and 1 / sqrt(var + eps), float32.
* ``_layer_norm_gelu_backward``: each program walks row blocks p, p + P, ... and recomputes
  the normalised rows from x and the kept statistics: with g = dy * gelu'(pre) and
  x_hat the normalised row, dx = rstd * (w g - mean(w g) - x_hat * mean(w g x_hat)); the
  program's sums of g x_hat and of g over its rows (the gradients of w and b) go to a row of
  partial sums, which torch adds up.
* ``_conv_layer_norm_gelu``: the forward for the CNN's first layer in inference, whose input
  is the waveform (one channel, kernel 10, stride 5). Each row is convolved from its window of
  samples inside the program, so the conv's output, the CNN's largest tensor, is neither
  written nor read back.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (the tests use this).
"""

from typing import Optional

import torch
import torch.nn.functional as F

from espnet_mamba.ops.backend import (
    KERNEL_MAX_ELEMENTS, fits_32_bit_offsets, needs_autograd, require_triton, triton_available,
)  # fmt: skip

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _normalised(x_ptr, mean_ptr, rstd_ptr, rows, r, c, C: tl.constexpr):
        """Rows r of x (rows, C) in float32, normalised from their kept statistics, and their mask."""
        ok = (r < rows)[:, None] & (c < C)[None, :]
        x = tl.load(x_ptr + r[:, None] * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + r, mask=r < rows, other=0.0)
        rstd = tl.load(rstd_ptr + r, mask=r < rows, other=0.0)
        return tl.where(ok, (x - mean[:, None]) * rstd[:, None], 0.0), rstd, ok

    @triton.jit
    def _gelu_of_norm(x, ok, w, b, eps, C: tl.constexpr):
        """Rows x (BLOCK_R, BLOCK_C), float32, zeros off ``ok``: gelu(w x_hat + b) with x_hat the
        rows normalised, each row's mean and rstd = 1 / sqrt(var + eps)."""
        mean = tl.sum(x, axis=1) / C
        centred = tl.where(ok, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / C + eps)
        pre = centred * rstd[:, None] * w[None, :] + b[None, :]
        return 0.5 * pre * (1.0 + tl.math.erf(pre * 0.7071067811865476)), mean, rstd

    @triton.jit
    def _layer_norm_gelu(
        x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, rows, eps,
        C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, KEEP_STATS: tl.constexpr,
    ):  # fmt: skip
        """Program (row block): y = gelu(w x_hat + b) for BLOCK_R rows; with KEEP_STATS, their mean and rstd."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.arange(0, BLOCK_C)
        ok = (r < rows)[:, None] & (c < C)[None, :]
        x = tl.load(x_ptr + r[:, None] * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        y, mean, rstd = _gelu_of_norm(x, ok, w, b, eps, C)
        tl.store(y_ptr + r[:, None] * C + c[None, :], y.to(y_ptr.dtype.element_ty), mask=ok)
        if KEEP_STATS:
            tl.store(mean_ptr + r, mean, mask=r < rows)
            tl.store(rstd_ptr + r, rstd, mask=r < rows)

    @triton.jit
    def _layer_norm_gelu_backward(
        x_ptr, w_ptr, b_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, partial_ptr, rows,
        C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        """Program p: dx for row blocks p, p + P, ..., and its row of partial (P, 2, C): the sums
        of g x_hat (w's gradient) and of g (b's) over those rows."""
        pid, programs = tl.program_id(0), tl.num_programs(0)
        c = tl.arange(0, BLOCK_C)
        w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)  # summed over rows once, at the end
        db = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
        block = pid
        while block * BLOCK_R < rows:  # a while loop: Triton's interpreter cannot range() over an argument
            r = block * BLOCK_R + tl.arange(0, BLOCK_R)
            x_hat, rstd, ok = _normalised(x_ptr, mean_ptr, rstd_ptr, rows, r, c, C)
            pre = x_hat * w[None, :] + b[None, :]
            cdf = 0.5 * (1.0 + tl.math.erf(pre * 0.7071067811865476))
            density = tl.exp(-0.5 * pre * pre) * 0.3989422804014327
            dy = tl.load(dy_ptr + r[:, None] * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
            g = dy * (cdf + pre * density)  # zero off the mask, where dy was loaded as 0
            dw += g * x_hat
            db += g
            wg = g * w[None, :]
            mean_wg = tl.sum(wg, axis=1) / C
            mean_wg_x = tl.sum(wg * x_hat, axis=1) / C
            dx = rstd[:, None] * (wg - mean_wg[:, None] - x_hat * mean_wg_x[:, None])
            tl.store(dx_ptr + r[:, None] * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=ok)
            block += programs
        tl.store(partial_ptr + pid * 2 * C + c, tl.sum(dw, axis=0), mask=c < C)
        tl.store(partial_ptr + (pid * 2 + 1) * C + c, tl.sum(db, axis=0), mask=c < C)

    @triton.jit
    def _waveform_conv(
        wav_ptr, conv_w_ptr, conv_b_ptr, r, rows, frames, wav_stride, c, C: tl.constexpr,
        STRIDE: tl.constexpr, KERNEL: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        """Rows r (batch * frames + frame) of the first conv's output, float32 (BLOCK_R, BLOCK_C):
        the product of their windows of samples (BLOCK_R, BLOCK_K) and the conv's weight (C, 1,
        KERNEL) read as (BLOCK_K, BLOCK_C), both zero past the kernel and the channels, in
        float32 on the tensor cores (TF32); plus the bias."""
        k = tl.arange(0, BLOCK_K)
        start = (r // frames) * wav_stride + (r % frames) * STRIDE
        ok = (r < rows)[:, None] & (k < KERNEL)[None, :]
        windows = tl.load(wav_ptr + start[:, None] + k[None, :], mask=ok, other=0.0).to(tl.float32)
        taps = (k < KERNEL)[:, None] & (c < C)[None, :]
        weight = tl.load(conv_w_ptr + c[None, :] * KERNEL + k[:, None], mask=taps, other=0.0).to(tl.float32)
        x = tl.dot(windows, weight, input_precision="tf32")
        if HAS_BIAS:
            x += tl.load(conv_b_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
        return x

    @triton.jit
    def _conv_layer_norm_gelu(
        wav_ptr, conv_w_ptr, conv_b_ptr, w_ptr, b_ptr, y_ptr, rows, frames, wav_stride, eps,
        C: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, STRIDE: tl.constexpr, KERNEL: tl.constexpr,
        BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        """Program (row block): the first layer's y = gelu(w x_hat + b) for BLOCK_R rows, with x
        the conv of the waveform, never stored."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        c = tl.arange(0, BLOCK_C)
        ok = (r < rows)[:, None] & (c < C)[None, :]
        x = _waveform_conv(wav_ptr, conv_w_ptr, conv_b_ptr, r, rows, frames, wav_stride, c, C, STRIDE, KERNEL,
                           BLOCK_K, HAS_BIAS)  # fmt: skip
        w = tl.load(w_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)
        y, _, _ = _gelu_of_norm(x, ok, w, b, eps, C)
        tl.store(y_ptr + r[:, None] * C + c[None, :], y.to(y_ptr.dtype.element_ty), mask=ok)


# Rows per program and its warps (8 and 4 the fastest of 4-32 rows and 4 or 8 warps on an H200,
# 2026-12-03), and programs of the backward per SM (8 and 16 the same); under Triton's
# interpreter (CPU) a few programs, so that the tests run the backward's loop over row blocks too.
_BLOCK_R = 8
_NUM_WARPS = 4
_BACKWARD_PROGRAMS_PER_SM = 8
_BACKWARD_PROGRAMS_CPU = 3


class _LayerNormGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, keep):
        rows, channels = x.shape
        y = torch.empty_like(x)
        stats = torch.empty(2, rows if keep else 1, device=x.device, dtype=torch.float32)
        _layer_norm_gelu[(triton.cdiv(rows, _BLOCK_R),)](
            x, weight, bias, y, stats[0], stats[1], rows, eps, C=channels, BLOCK_C=triton.next_power_of_2(channels),
            BLOCK_R=_BLOCK_R, KEEP_STATS=keep, num_warps=_NUM_WARPS,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, bias, stats)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, bias, stats = ctx.saved_tensors
        rows, channels = x.shape
        programs = _BACKWARD_PROGRAMS_CPU
        if x.is_cuda:
            programs = _BACKWARD_PROGRAMS_PER_SM * torch.cuda.get_device_properties(x.device).multi_processor_count
        programs = max(1, min(programs, triton.cdiv(rows, _BLOCK_R)))
        partial = torch.empty(programs, 2, channels, device=x.device, dtype=torch.float32)
        dx = torch.empty_like(x)
        _layer_norm_gelu_backward[(programs,)](
            x, weight, bias, dy.contiguous(), stats[0], stats[1], dx, partial, rows,
            C=channels, BLOCK_C=triton.next_power_of_2(channels), BLOCK_R=_BLOCK_R, num_warps=_NUM_WARPS,
        )  # fmt: skip
        sums = partial.sum(0)
        return dx, sums[0].to(weight.dtype), sums[1].to(bias.dtype), None, None


def layer_norm_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """gelu(layer_norm(x, (C,), weight, bias, eps)) over x's last dim, differentiable.

    Args:
        x: (..., C), any float dtype; made contiguous if it is not.
        weight, bias: (C,).

    Returns:
        (..., C) in x's dtype, computed in float32 (as autocast runs the norm); GELU in its
        exact (erf) form. The gradients of weight and bias are summed in float32.
    """
    require_triton("the LayerNorm + GELU kernel")
    channels = x.shape[-1]
    if weight.shape != (channels,) or bias.shape != (channels,):
        raise ValueError(f"weight and bias of shape ({channels},) expected for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)} and {tuple(bias.shape)}")  # fmt: skip
    if x.numel() == 0:
        return F.gelu(F.layer_norm(x, (channels,), weight, bias, eps))
    if not fits_32_bit_offsets(x):
        raise ValueError(f"the LayerNorm + GELU kernel indexes with 32-bit offsets: x of shape {tuple(x.shape)} "
                         "has too many elements; split the batch")  # fmt: skip
    keep_stats = needs_autograd(x, weight, bias)  # for the backward: each row's mean and rstd
    rows = x.reshape(-1, channels).contiguous()
    return _LayerNormGelu.apply(rows, weight.contiguous(), bias.contiguous(), eps, keep_stats).view(x.shape)


# Rows per program of the first layer's kernel and its warps: the fastest of 16, 32 and 64 rows,
# 4 and 8 warps, and an IEEE or TF32 product on an H100 (docs/benchmarks.md, 2026-12-07).
_CONV_BLOCK_R = 16
_CONV_NUM_WARPS = 4


def waveform_conv_fits_32_bit_offsets(wav: torch.Tensor, channels: int, kernel: int, stride: int) -> bool:
    """Whether :func:`waveform_conv_layer_norm_gelu` can address ``wav`` (batch, samples, ...)
    and its output of ``channels`` per frame with 32-bit offsets."""
    frames = (wav.shape[1] - kernel) // stride + 1
    return wav.shape[0] * frames * channels < KERNEL_MAX_ELEMENTS and fits_32_bit_offsets(wav)


def waveform_conv_layer_norm_gelu(
    wav: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: Optional[torch.Tensor],
    stride: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-5,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """The causal CNN's first layer in one pass, for inference: gelu(layer_norm(conv1d(wav))),
    channels-last.

    The conv's output, the largest tensor of the CNN (at 640 s, 2M frames x 512 channels), is
    never stored: each program convolves its frames' windows of samples (TF32 products), then
    normalises them. There is no backward: with one, the kernel was slower than the eager layer
    (docs/benchmarks.md, 2026-12-07), so under autograd the eager layer runs.

    Args:
        wav: (batch, samples), unit stride along samples.
        conv_weight: (C, 1, K). conv_bias: (C,) or None. stride: the conv's stride.
        weight, bias: (C,), the LayerNorm's.
        dtype: of the output (default wav's): under autocast, the autocast dtype, as the
            product of :class:`~espnet_mamba.nn.feature_extractor.ConvLayer` gives it.

    Returns:
        (batch, frames, C), frames = (samples - K) // stride + 1; norm and GELU (its erf form)
        in float32.
    """
    require_triton("the waveform conv + LayerNorm + GELU kernel")
    if conv_weight.dim() != 3 or conv_weight.shape[1] != 1:
        raise ValueError(f"conv_weight must be (C, 1, K), got {tuple(conv_weight.shape)}")
    channels, _, kernel = conv_weight.shape
    for name, t in (("conv_bias", conv_bias), ("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{name} must be ({channels},) for conv_weight {tuple(conv_weight.shape)}, "
                             f"got {tuple(t.shape)}")  # fmt: skip
    if wav.dim() != 2 or wav.stride(1) != 1:
        raise ValueError(f"wav must be (batch, samples) with unit stride along samples, got {tuple(wav.shape)} "
                         f"strides {wav.stride()}")  # fmt: skip
    if needs_autograd(wav, conv_weight, weight, bias, *([] if conv_bias is None else [conv_bias])):
        raise ValueError("the waveform conv kernel computes no gradients; under autograd run the eager layer, "
                         "or call it under torch.no_grad()")  # fmt: skip
    batch, samples = wav.shape
    frames = (samples - kernel) // stride + 1
    if frames < 1:
        raise ValueError(f"{samples} samples are fewer than the conv's kernel of {kernel}")
    if not waveform_conv_fits_32_bit_offsets(wav, channels, kernel, stride):
        raise ValueError(f"the waveform conv kernel indexes with 32-bit offsets: wav of shape {tuple(wav.shape)} "
                         "gives too many frames; split the batch")  # fmt: skip
    y = torch.empty(batch, frames, channels, device=wav.device, dtype=dtype or wav.dtype)
    _conv_layer_norm_gelu[(triton.cdiv(batch * frames, _CONV_BLOCK_R),)](
        wav, conv_weight.contiguous(), conv_weight if conv_bias is None else conv_bias, weight.contiguous(),
        bias.contiguous(), y, batch * frames, frames, wav.stride(0), eps, C=channels,
        BLOCK_C=max(16, triton.next_power_of_2(channels)), BLOCK_R=_CONV_BLOCK_R, STRIDE=stride, KERNEL=kernel,
        BLOCK_K=max(16, triton.next_power_of_2(kernel)), HAS_BIAS=conv_bias is not None, num_warps=_CONV_NUM_WARPS,
    )  # fmt: skip
    return y
