"""Depthwise causal 1-D convolution of Mamba, over frames (``causal_conv1d``) or one frame
(``causal_conv1d_update``): the causal-conv1d kernel, else our Triton kernel on CUDA, or PyTorch."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from espnet_mamba.ops.backend import check_impl, mamba_kernels, needs_autograd, use_kernel, use_triton
from espnet_mamba.ops.depthwise_conv import depthwise_conv1d_silu
from espnet_mamba.ops.single_step import depthwise_conv1d_step


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = "silu",
    initial_state: Optional[torch.Tensor] = None,
    impl: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """y_t = act(bias + sum_k weight[:, k] * x_{t - K + 1 + k}), each channel on its own.

    Args:
        x: (batch, E, L). weight: (E, K). bias: (E,).
        activation: "silu" or None.
        initial_state: (batch, E, K - 1), the K - 1 inputs before x (zeros if None).
        impl: "auto" and "kernel" run, on CUDA and without an initial state, causal-conv1d's
            kernel where it is installed and takes x's shape (:func:`_fits_causal_conv1d`),
            else ours (``depthwise_conv1d_silu``, in x's layout); "torch" our PyTorch code.

    Returns:
        y (batch, E, L) and the final state (batch, E, K - 1): the last K - 1 inputs.
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    check_impl(impl)
    width = weight.shape[1]
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], x.shape[1], width - 1)
        if _fits_causal_conv1d(x, width) and use_kernel(impl, x, "causal_conv1d", requires="causal_conv1d_fn"):
            y = mamba_kernels()["causal_conv1d_fn"](x, weight, bias, activation=activation)
            return y, _last_inputs(initial_state, x, width)
        if use_triton(impl, x, "causal_conv1d"):
            y = depthwise_conv1d_silu(x.transpose(1, 2), weight, bias, silu=activation == "silu")
            return y.transpose(1, 2), _last_inputs(initial_state, x, width)
    padded = torch.cat([initial_state.to(x.dtype), x], dim=-1)
    y = _depthwise_conv(padded, weight, bias)
    if activation == "silu":
        y = F.silu(y)
    return y, padded[..., padded.shape[-1] - (width - 1) :]


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = "silu",
    impl: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One frame of :func:`causal_conv1d` after ``conv_state``, for streaming. ``conv_state``
    is left as it is.

    Args:
        x: (batch, E). conv_state: (batch, E, K - 1), the last K - 1 inputs. weight: (E, K).
        bias: (E,). activation: "silu" or None.
        impl: "auto" and "kernel" run, on CUDA and where nothing needs a gradient,
            causal-conv1d's single-step kernel where it is installed, else ours
            (``depthwise_conv1d_step``); "torch", or under autograd, :func:`causal_conv1d`'s
            PyTorch code on one frame.

    Returns:
        y (batch, E) and the new state (batch, E, K - 1).
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    check_impl(impl)
    if not needs_autograd(x, conv_state, weight, *([] if bias is None else [bias])):  # the kernels have no backward
        if use_kernel(impl, x, "causal_conv1d_update", requires="causal_conv1d_update"):
            new_state = conv_state.clone()  # the kernel updates the state in place
            return mamba_kernels()["causal_conv1d_update"](x, new_state, weight, bias, activation), new_state
        if use_triton(impl, x, "causal_conv1d_update"):
            return depthwise_conv1d_step(x, conv_state, weight, bias, silu=activation == "silu")
    y, new_state = causal_conv1d(x[..., None], weight, bias, activation, conv_state, impl="torch")
    return y[..., 0], new_state


def _fits_causal_conv1d(x: torch.Tensor, width: int) -> bool:
    """Whether causal-conv1d 1.7's kernel takes x (batch, E, L): 2 to 4 taps, and in the
    channel-last layout E and the strides of batch and L multiples of 8."""
    if not 2 <= width <= 4:
        return False
    channel_last = x.stride(1) == 1 and x.stride(2) != 1
    return not channel_last or (x.shape[1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0)


def _depthwise_conv(padded: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """(batch, E, L + K - 1) -> (batch, E, L): K shifted multiply-adds, the same sum as a
    K-tap grouped ``conv1d`` and faster on CPU (mamba_base, 2 cores: 356 -> 191 us for 32
    frames, 22 -> 4.6 ms for 2000 frames, against oneDNN's depthwise kernel)."""
    width = weight.shape[1]
    length = padded.shape[-1] - width + 1
    taps = weight.to(padded.dtype)[:, :, None]  # (E, K, 1)
    y = padded[..., :length] * taps[:, 0] if bias is None else torch.addcmul(
        bias.to(padded.dtype)[:, None], taps[:, 0], padded[..., :length]
    )
    for k in range(1, width):
        y = y.addcmul_(taps[:, k], padded[..., k : k + length])
    return y


def _last_inputs(initial_state: torch.Tensor, x: torch.Tensor, width: int) -> torch.Tensor:
    padded = torch.cat([initial_state, x[..., -(width - 1) :]], dim=-1)
    return padded[..., padded.shape[-1] - (width - 1) :]
