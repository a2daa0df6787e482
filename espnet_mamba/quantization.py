"""int8 linear layers for CPU inference: dynamic quantisation, with Mamba's dt projections left in float.

On CPU, a streaming step of a Mamba model spends about half its time in its linear layers'
products over a few dozen frames (docs/benchmarks.md, "Streaming ASR on this machine's CPU").
Dynamic quantisation keeps each weight in int8, one scale per output channel, and quantises
the activations of every call on the fly, so the products run on int8 kernels and nothing
needs calibrating. It goes through ESPnet's ``quantize_dynamic`` (the one behind
``asr_inference --quantize_asr_model``), which also picks a quantised engine where torch left
none (macOS).

Every ``torch.nn.Linear`` turns int8 (the mixers' in/out/x projections, attention, FFNs, the
feature projection, an ASR model's CTC layer) but Mamba's ``dt_proj``: its product is tiny
(dt_rank 48 inputs for mamba_base), and its output goes through softplus and an exponential
into every state. The mixers also run with ESPnet's own option, which quantises every linear
layer, dt_proj included. Quantised layers run on CPU only.
"""

import warnings

import torch
import torch.nn as nn
from espnet2.torch_utils.quantization import quantize_dynamic

from espnet_mamba.nn.mamba import Mamba


def float_only_linears(model: nn.Module) -> set:
    """Names of the linear layers of ``model`` kept in float: the dt projections of its Mamba
    mixers (``dt_proj``, and a bidirectional block's ``dt_proj_b``)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, Mamba):
            prefix = f"{name}." if name else ""
            names.update(prefix + child for child, _ in module.named_children() if child.startswith("dt_proj"))
    return names


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (on CPU, in eval mode) whose linear layers, but those of
    :func:`float_only_linears`, compute in int8: per-channel weights, activations quantised
    per call.

    Raises ValueError for a model with parameters off the CPU.
    """
    devices = {p.device.type for p in model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 dynamic quantisation runs on CPU only; the model is on {sorted(devices)}")
    if type(model) is nn.Linear:  # quantize_dynamic swaps children only
        return quantize_linear_int8(nn.Sequential(model))[0]
    keep_float = float_only_linears(model)
    config = torch.ao.quantization.per_channel_dynamic_qconfig
    targets = {name: config for name, module in model.named_modules()
               if type(module) is nn.Linear and name not in keep_float}  # fmt: skip
    with warnings.catch_warnings():  # torch 2.11 points eager-mode quantisation users to torchao
        warnings.filterwarnings("ignore", message="(?s).*torchao")
        return quantize_dynamic(model.eval(), qconfig_spec=targets, dtype=torch.qint8, inplace=False)
