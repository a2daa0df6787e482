"""The PyTorch paths of espnet_mamba.ops against plain definitions."""

import importlib
import inspect
import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from reference import selective_scan_reference

from espnet_mamba.ops import backend, causal_conv1d, selective_scan
from espnet_mamba.ops.causal_conv1d import _fits_causal_conv1d

BATCH, CHANNELS, STATES = 2, 6, 4


def scan_inputs(length: int, seed: int = 0, delta_bias_scale: float = 1.0, a_scale: float = 1.0) -> dict:
    """Random float32 inputs of selective_scan for ``length`` frames (all optional ones given)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return dict(
        u=rand(BATCH, CHANNELS, length),
        delta=rand(BATCH, CHANNELS, length),
        A=-torch.rand(CHANNELS, STATES, generator=g) * a_scale - 0.1,
        B=rand(BATCH, STATES, length),
        C=rand(BATCH, STATES, length),
        D=rand(CHANNELS),
        z=rand(BATCH, CHANNELS, length),
        delta_bias=rand(CHANNELS) * delta_bias_scale,
        initial_state=rand(BATCH, CHANNELS, STATES),
    )


def run_both(inputs: dict, chunk_size: int, with_autograd: bool = False):
    """(out, last state) of selective_scan (torch, float32) and of the reference (float64).

    ``with_autograd`` runs the scan's differentiable form (u requires grad), otherwise its
    in-place inference form."""
    given = dict(inputs, u=inputs["u"].clone().requires_grad_(with_autograd))
    out, last = selective_scan(
        **given, delta_softplus=True, return_last_state=True, impl="torch", chunk_size=chunk_size
    )
    assert out.requires_grad == with_autograd
    out, last = out.detach(), last.detach()
    ref_out, ref_last = selective_scan_reference(
        **{k: (v.double() if v is not None else None) for k, v in inputs.items()}, delta_softplus=True
    )
    return out, last, ref_out, ref_last


OPTIONAL = ("D", "z", "delta_bias", "initial_state")


@pytest.mark.parametrize(
    "chunk_size, with_autograd", [(1, True), (4, True), (16, True), (64, True), (16, False)]
)
@pytest.mark.parametrize("given", list(itertools.product([False, True], repeat=len(OPTIONAL))))
def test_selective_scan_matches_reference(chunk_size, with_autograd, given):
    # 37 frames: not a multiple of 4 or 16, shorter than 64
    inputs = scan_inputs(37)
    for name, keep in zip(OPTIONAL, given):
        if not keep:
            inputs[name] = None
    out, last, ref_out, ref_last = run_both(inputs, chunk_size, with_autograd)
    assert out.dtype == torch.float32 and out.shape == (BATCH, CHANNELS, 37)
    assert last.dtype == torch.float32 and last.shape == (BATCH, CHANNELS, STATES)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_autograd", [True, False])
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17])
def test_selective_scan_lengths_around_the_chunk(length, with_autograd):
    out, last, ref_out, ref_last = run_both(scan_inputs(length, seed=1), 16, with_autograd)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


def test_selective_scan_without_last_state_returns_the_output_only():
    inputs = scan_inputs(20)
    out = selective_scan(**inputs, delta_softplus=True, impl="torch")
    assert torch.is_tensor(out)
    with_state, _ = selective_scan(**inputs, delta_softplus=True, impl="torch", return_last_state=True)
    assert torch.equal(out, with_state)


def test_selective_scan_without_softplus_uses_delta_as_given():
    inputs = scan_inputs(20)
    inputs["delta"] = inputs["delta"].abs()  # a valid step size without softplus
    out, last = selective_scan(**inputs, return_last_state=True, impl="torch", chunk_size=8)
    ref_out, ref_last = selective_scan_reference(**{k: v.double() for k, v in inputs.items()})
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)


def test_selective_scan_continues_from_its_last_state():
    inputs = scan_inputs(30, seed=2)
    inputs["initial_state"] = None
    whole, whole_last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl="torch")
    split = 11
    first_in = {k: (v[..., :split] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}
    second_in = {k: (v[..., split:] if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}
    first, state = selective_scan(**first_in, delta_softplus=True, return_last_state=True, impl="torch")
    second, last = selective_scan(
        **{**second_in, "initial_state": state}, delta_softplus=True, return_last_state=True, impl="torch"
    )
    torch.testing.assert_close(torch.cat([first, second], dim=-1), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, whole_last, rtol=1e-5, atol=1e-5)


def scan_gradients(fn, inputs: dict, weights) -> dict:
    """Gradients of sum(out * w_out) + sum(last * w_last) with respect to every input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out, last = fn(leaves)
    (out * weights[0]).sum().add((last * weights[1]).sum()).backward()
    return {k: v.grad for k, v in leaves.items()}


def assert_gradients_match_reference(inputs: dict, weights, chunk_size: int) -> None:
    """Every input's gradient through selective_scan (torch, float32) is finite and equals
    the step-by-step reference's (float64)."""
    grads = scan_gradients(
        lambda x: selective_scan(
            **x, delta_softplus=True, return_last_state=True, impl="torch", chunk_size=chunk_size
        ),
        inputs, weights,
    )  # fmt: skip
    ref_grads = scan_gradients(
        lambda x: selective_scan_reference(**x, delta_softplus=True),
        {k: v.double() for k, v in inputs.items()},
        tuple(w.double() for w in weights),
    )
    for name in inputs:
        assert torch.isfinite(grads[name]).all(), name
        torch.testing.assert_close(grads[name].double(), ref_grads[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("chunk_size", [1, 5, 16])
def test_selective_scan_gradients_match_reference(chunk_size):
    inputs = scan_inputs(23, seed=3)
    weights = (torch.randn(BATCH, CHANNELS, 23), torch.randn(BATCH, CHANNELS, STATES))
    assert_gradients_match_reference(inputs, weights, chunk_size)


def test_selective_scan_huge_decays_stay_exact_and_finite():
    # dt ~ softplus(delta + 40) ~ 40 and A down to -60: decays of e^-2400 per frame, which
    # underflow to exactly 0 (a formulation with exp(-cumulative log decay) would overflow).
    # Half of the channels keep ordinary decays.
    inputs = scan_inputs(40, seed=4, a_scale=60.0)
    inputs["delta_bias"][: CHANNELS // 2] += 40.0
    out, last, ref_out, ref_last = run_both(inputs, chunk_size=16)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-5, atol=1e-5)

    weights = (torch.randn(BATCH, CHANNELS, 40), torch.randn(BATCH, CHANNELS, STATES))
    assert_gradients_match_reference(inputs, weights, chunk_size=16)


def test_selective_scan_kernel_impl_on_cpu_raises():
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan(**{**scan_inputs(8), "initial_state": None}, impl="kernel")


def test_selective_scan_unknown_impl_raises():
    with pytest.raises(ValueError, match="impl"):
        selective_scan(**{**scan_inputs(8), "initial_state": None}, impl="cuda")


@pytest.mark.parametrize("impl", ["auto", "kernel"])
def test_use_kernel_falls_back_where_a_required_function_is_missing(impl, monkeypatch):
    # mamba-ssm imports, causal-conv1d does not: ops needing causal-conv1d fall back to our
    # code, the others take the kernels (a stand-in for a CUDA tensor: only is_cuda is read)
    kernels = {"selective_scan_fn": object(), "mamba_inner_fn": object(), "causal_conv1d_fn": None}
    monkeypatch.setattr(backend, "mamba_kernels", lambda: kernels)
    x = SimpleNamespace(is_cuda=True, device="cuda:0")
    assert backend.use_kernel(impl, x, "selective_scan")
    assert not backend.use_kernel(impl, x, "causal_conv1d", requires="causal_conv1d_fn")
    kernels["causal_conv1d_fn"] = object()
    assert backend.use_kernel(impl, x, "causal_conv1d", requires="causal_conv1d_fn")


def test_use_triton_only_on_cuda_and_never_under_torch(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    cuda = SimpleNamespace(is_cuda=True, device="cuda:0")  # only is_cuda and device are read
    assert backend.use_triton("auto", cuda, "causal_conv1d") and backend.use_triton("kernel", cuda, "causal_conv1d")
    assert not backend.use_triton("torch", cuda, "causal_conv1d")
    assert not backend.use_triton("auto", torch.zeros(1), "causal_conv1d")
    with pytest.raises(RuntimeError, match="CUDA"):
        backend.use_triton("kernel", torch.zeros(1), "causal_conv1d")
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    assert not backend.use_triton("auto", cuda, "causal_conv1d")
    with pytest.raises(RuntimeError, match="Triton does not import"):
        backend.use_triton("kernel", cuda, "causal_conv1d")


@pytest.mark.parametrize(
    "module, kernel",
    [
        ("chunked_scan", "chunked_selective_scan"),
        ("layer_norm_gelu", "layer_norm_gelu"),
        ("layer_norm_gelu", "waveform_conv_layer_norm_gelu"),
        ("depthwise_conv", "depthwise_conv1d_silu"),
        ("grouped_conv", "grouped_conv1d"),
        ("single_step", "depthwise_conv1d_step"),
        ("single_step", "selective_state_step"),
    ],
)
def test_each_triton_kernel_names_itself_where_triton_is_missing(module, kernel, monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    function = getattr(importlib.import_module(f"espnet_mamba.ops.{module}"), kernel)
    arguments = inspect.signature(function).parameters
    required = [name for name, p in arguments.items() if p.default is inspect.Parameter.empty]
    with pytest.raises(RuntimeError, match=r"^the .+ needs Triton, which is not installed on this platform$"):
        function(*[torch.zeros(1)] * len(required))


# causal_conv1d ------------------------------------------------------------------------------


def conv_inputs(length: int, width: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, CHANNELS, length, generator=g)
    weight = torch.randn(CHANNELS, width, generator=g)
    bias = torch.randn(CHANNELS, generator=g)
    return x, weight, bias


def conv1d_definition(x, weight, bias, activation):
    """Depthwise F.conv1d with width - 1 zeros on the left, i.e. the causal conv."""
    width = weight.shape[1]
    y = F.conv1d(x, weight[:, None, :], bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(y) if activation == "silu" else y


def test_causal_conv1d_kernel_is_chosen_only_for_shapes_it_takes():
    time_major = torch.zeros(2, 100, 304).transpose(1, 2)  # channel-last (batch, E, L) view
    assert _fits_causal_conv1d(time_major, 4)
    assert not _fits_causal_conv1d(time_major, 5)  # causal-conv1d takes 2 to 4 taps
    assert not _fits_causal_conv1d(torch.zeros(2, 100, 300).transpose(1, 2), 4)  # E not a multiple of 8
    assert _fits_causal_conv1d(torch.zeros(2, 300, 100), 4)  # channel-major: any E


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("with_bias", [True, False])
def test_causal_conv1d_matches_conv1d(activation, width, with_bias):
    x, weight, bias = conv_inputs(20, width)
    bias = bias if with_bias else None
    y, state = causal_conv1d(x, weight, bias, activation, impl="torch")
    torch.testing.assert_close(y, conv1d_definition(x, weight, bias, activation), rtol=1e-6, atol=1e-6)
    assert torch.equal(state, x[..., -(width - 1) :])


@pytest.mark.parametrize("split", [1, 2, 3, 7, 19])
def test_causal_conv1d_continues_from_its_state(split):
    x, weight, bias = conv_inputs(20, seed=1)
    whole, whole_state = causal_conv1d(x, weight, bias, impl="torch")
    first, state = causal_conv1d(x[..., :split], weight, bias, impl="torch")
    second, last_state = causal_conv1d(x[..., split:], weight, bias, initial_state=state, impl="torch")
    torch.testing.assert_close(torch.cat([first, second], dim=-1), whole, rtol=1e-6, atol=1e-6)
    assert torch.equal(last_state, whole_state)


def test_causal_conv1d_short_input_keeps_the_zero_history():
    x, weight, bias = conv_inputs(2, seed=2)
    _, state = causal_conv1d(x, weight, bias, impl="torch")
    assert torch.equal(state, torch.cat([x.new_zeros(BATCH, CHANNELS, 1), x], dim=-1))


def test_causal_conv1d_unknown_activation_raises():
    x, weight, bias = conv_inputs(5)
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, weight, bias, activation="relu", impl="torch")


def test_causal_conv1d_kernel_impl_on_cpu_raises():
    x, weight, bias = conv_inputs(5)
    with pytest.raises(RuntimeError, match="CUDA"):
        causal_conv1d(x, weight, bias, impl="kernel")
