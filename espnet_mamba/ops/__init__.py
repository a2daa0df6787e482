"""The Mamba ops, each one function that runs a kernel or its exact PyTorch twin (nothing
above this layer knows which one ran), and four Triton kernels of ours, each with a backward
pass: the chunked scan, where ``use_chunked_scan`` says so, the positional conv, Mamba's
depthwise conv where causal-conv1d is not installed (``depthwise_conv``), and the causal CNN's
LayerNorm + GELU (``layer_norm_gelu``); and for inference alone, without a backward, the
causal CNN's first layer, its conv of the waveform included (``waveform_conv_layer_norm_gelu``),
and Mamba's one-frame streaming step where mamba-ssm and causal-conv1d are not installed
(``single_step``, under ``causal_conv1d_update`` and ``selective_state_update``)."""

from espnet_mamba.ops.backend import (
    IMPLS, mamba_kernels, needs_autograd, triton_available, use_chunked_scan, use_kernel,
)  # fmt: skip
from espnet_mamba.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from espnet_mamba.ops.chunked_scan import chunked_selective_scan
from espnet_mamba.ops.depthwise_conv import depthwise_conv1d_silu
from espnet_mamba.ops.grouped_conv import grouped_conv1d
from espnet_mamba.ops.layer_norm_gelu import layer_norm_gelu, waveform_conv_layer_norm_gelu
from espnet_mamba.ops.selective_scan import selective_scan, selective_state_update

__all__ = [
    "IMPLS", "causal_conv1d", "causal_conv1d_update", "chunked_selective_scan", "depthwise_conv1d_silu",
    "grouped_conv1d", "layer_norm_gelu", "mamba_kernels", "needs_autograd", "selective_scan", "selective_state_update",
    "triton_available", "use_chunked_scan", "use_kernel", "waveform_conv_layer_norm_gelu",
]  # fmt: skip
