"""Which implementation runs the Mamba ops: the mamba-ssm CUDA kernels or our PyTorch code.

``impl`` is one of ``"auto"``, ``"kernel"`` or ``"torch"``:

* ``auto``: the kernels for CUDA tensors when mamba-ssm imports, PyTorch otherwise;
* ``kernel``: the kernels, and a clear error when the tensor is not on CUDA or the
  kernels are not installed (``./setup.sh --cuda``);
* ``torch``: always our PyTorch code (exact, any device).

Under ``auto`` and ``kernel``, the Mamba mixer runs time-major on our Triton chunked scan
(:mod:`espnet_mamba.ops.chunked_scan`), which parallelises over time where mamba-ssm's scan
cannot, for CUDA inputs of at least ``CHUNKED_SCAN_MIN_FRAMES`` frames in inference, and of
at least ``CHUNKED_SCAN_MIN_TRAIN_FRAMES`` frames in the batch with autograd; under ``auto``
also for shorter CUDA inputs where mamba-ssm is not installed (see :func:`use_chunked_scan`).
Mamba's depthwise conv runs our Triton kernel on CUDA under both where causal-conv1d is not
installed (:func:`use_triton`): it needs Triton only, which torch's Linux wheels bring.

The choice made is logged once per (op, path).
"""

import functools
import logging
from typing import Optional

import torch

try:
    import triton
except ImportError:  # no Triton wheel for this platform (e.g. macOS)
    triton = None

IMPLS = ("auto", "kernel", "torch")
# From this many frames on the chunked scan is faster than mamba-ssm's in the model. In GPU
# time (forwards replayed from CUDA graphs, H200, bf16) mamba-ssm's was 0.1-0.3 ms faster at
# 49-249 frames (1-5 s), the chunked one 0.1-0.2 ms faster at 499 (10 s) and 20-26% at 3999
# (80 s): docs/benchmarks.md, "Where the chunked scan starts, in GPU time"
CHUNKED_SCAN_MIN_FRAMES = 400
# With autograd, from this many frames in the batch (batch x L) on: below it, a mixer's
# forward and backward are bound by kernel launches, and the chunked path launches more than
# mamba-ssm's mamba_inner_fn (docs/benchmarks.md, "The chunked scan in training")
CHUNKED_SCAN_MIN_TRAIN_FRAMES = 4096

# Our Triton kernels index with 32-bit offsets: each tensor they address has fewer elements
# than this (each kernel's wrapper raises ValueError otherwise)
KERNEL_MAX_ELEMENTS = 2**31

_logger = logging.getLogger("espnet_mamba.ops")
_logged = set()


@functools.lru_cache(maxsize=None)
def mamba_kernels():
    """The mamba-ssm kernel functions as a dict, or None where mamba-ssm does not import.

    Keys: ``selective_scan_fn``, ``mamba_inner_fn``, ``selective_state_update``,
    ``causal_conv1d_fn``, ``causal_conv1d_update`` (the last three may be None).
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except Exception:  # ImportError, or an extension built for another torch
        return None
    kernels = {"selective_scan_fn": selective_scan_fn, "mamba_inner_fn": mamba_inner_fn}
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    except Exception:
        selective_state_update = None
    try:
        from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    except Exception:
        causal_conv1d_fn = causal_conv1d_update = None
        _logger.warning("mamba-ssm imports but causal-conv1d does not: the Mamba blocks' depthwise conv runs "
                        "our Triton kernel on CUDA, whose backward is slower (docs/benchmarks.md, 'Our "
                        "Triton depthwise conv'), and streaming steps run our Triton one-frame conv. Install "
                        "causal-conv1d==1.7.0.")  # fmt: skip
    kernels.update(
        selective_state_update=selective_state_update,
        causal_conv1d_fn=causal_conv1d_fn,
        causal_conv1d_update=causal_conv1d_update,
    )
    return kernels


def triton_available() -> bool:
    """Whether Triton imports: our inference kernels need it (torch's Linux wheels bring it)."""
    return triton is not None


def require_triton(kernel: str) -> None:
    """A clear error where ``kernel`` (e.g. "the chunked scan") cannot run because Triton does not import."""
    if not triton_available():
        raise RuntimeError(f"{kernel} needs Triton, which is not installed on this platform")


def needs_autograd(*tensors: torch.Tensor) -> bool:
    """Whether a computation on ``tensors`` must be differentiable: grad mode on, and one of
    them requires grad. A module passes its input and its parameters, so a frozen module in a
    training run does not."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def fits_32_bit_offsets(*tensors: torch.Tensor) -> bool:
    """Whether our Triton kernels can address each tensor: its elements, and the span of its
    strides (a view may reach into a larger tensor), below ``KERNEL_MAX_ELEMENTS``."""
    return all(
        max(t.numel(), 1 + sum((n - 1) * step for n, step in zip(t.shape, t.stride()))) < KERNEL_MAX_ELEMENTS
        for t in tensors
    )


def autocast_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of a product on x, as our kernels give it: CUDA's autocast dtype where autocast
    is on, x's dtype elsewhere."""
    return torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"ssm impl must be one of {IMPLS}, got {impl!r}")
    return impl


def use_kernel(impl: str, x: torch.Tensor, op: str, requires: Optional[str] = None) -> bool:
    """Whether ``op`` on tensor ``x`` should run the mamba-ssm kernel under ``impl``; with
    ``requires`` (a key of :func:`mamba_kernels`), only where that function imports too (the
    causal-conv1d ones are optional): else ``op`` runs our PyTorch code."""
    check_impl(impl)
    kernel = False
    if impl == "kernel":
        _require_cuda(x)
        if mamba_kernels() is None:
            raise RuntimeError(
                "ssm impl 'kernel' was asked for but mamba-ssm does not import: install the "
                "CUDA extra (./setup.sh --cuda) or use impl 'auto'/'torch'"
            )
        kernel = True
    elif impl == "auto":
        kernel = x.is_cuda and mamba_kernels() is not None
    if kernel and requires is not None and mamba_kernels()[requires] is None:
        _log_path(op, f"fallback ({requires} is not installed)")
        return False
    _log_path(op, "mamba-ssm kernel" if kernel else "pytorch")
    return kernel


def _log_path(op: str, path: str) -> None:
    """Log, once per (op, path), which path an op takes."""
    if (op, path) not in _logged:
        _logged.add((op, path))
        _logger.info("%s runs on the %s path", op, path)


def _require_cuda(x: torch.Tensor) -> None:
    if not x.is_cuda:
        raise RuntimeError(
            f"ssm impl 'kernel' needs CUDA tensors, got a tensor on {x.device}; use impl 'auto' or 'torch' on CPU"
        )


def use_triton(impl: str, x: torch.Tensor, op: str) -> bool:
    """Whether ``op`` on tensor ``x`` should run a Triton kernel of ours: CUDA, ``impl`` not
    "torch", and Triton present; under "kernel", a clear error where it cannot."""
    check_impl(impl)
    if impl == "kernel":
        _require_cuda(x)
        if not triton_available():
            raise RuntimeError("ssm impl 'kernel' was asked for but Triton does not import; use impl 'auto'/'torch'")
    triton_path = impl != "torch" and x.is_cuda and triton_available()
    _log_path(op, "Triton kernel" if triton_path else "pytorch")
    return triton_path


def use_chunked_scan(impl: str, x: torch.Tensor, needs_grad: bool) -> bool:
    """Whether a mixer on input x (batch, L, D) should run on the chunked scan: CUDA, ``impl``
    not "torch", Triton present, and at least ``CHUNKED_SCAN_MIN_FRAMES`` frames (inference) or
    ``CHUNKED_SCAN_MIN_TRAIN_FRAMES`` frames in the batch (``needs_grad``); under "auto" at any
    length where mamba-ssm does not import, instead of our PyTorch scan (about 10x slower at
    10 s of audio on an H200, docs/benchmarks.md)."""
    check_impl(impl)
    if impl == "torch" or not x.is_cuda or not triton_available():
        return False
    if impl == "auto" and mamba_kernels() is None:
        chunked, setting = True, "mamba-ssm not installed"
    elif needs_grad:
        chunked, setting = x.shape[0] * x.shape[1] >= CHUNKED_SCAN_MIN_TRAIN_FRAMES, "training"
    else:
        chunked, setting = x.shape[1] >= CHUNKED_SCAN_MIN_FRAMES, "inference, long input"
    if chunked:
        _log_path("selective_scan", f"Triton chunked scan ({setting})")
    return chunked
