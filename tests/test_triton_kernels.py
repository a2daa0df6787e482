"""Our Triton kernels on CPU, through Triton's interpreter: the chunked scan and its gradients
against our PyTorch scan, the grouped conv and the depthwise conv and their gradients against
torch's conv1d, and the CNN's LayerNorm + GELU against torch's.

``TRITON_INTERPRET=1`` must be set before Triton compiles the kernels at import, so the checks
run in a fresh interpreter (``_run_interpreted``). The GPU tests (tests/test_gpu.py) compare
the compiled kernels with mamba-ssm's and cuDNN's.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from espnet_mamba.ops import (
    backend, chunked_selective_scan, depthwise_conv1d_silu, grouped_conv1d, layer_norm_gelu,
    waveform_conv_layer_norm_gelu,
)  # fmt: skip
from espnet_mamba.ops.backend import triton_available
from espnet_mamba.ops.chunked_scan import default_chunk_size, train_chunk_size

pytestmark = pytest.mark.skipif(not triton_available(), reason="Triton is not installed on this platform")

_CHECKS = r"""
import json
import torch
import torch.nn.functional as F
from espnet_mamba.nn.mamba import Mamba
from espnet_mamba.ops import (
    chunked_selective_scan, depthwise_conv1d_silu, grouped_conv1d, layer_norm_gelu, selective_scan,
    waveform_conv_layer_norm_gelu,
)

torch.manual_seed(0)
batch, length, E, N = 2, 45, 24, 5  # N not a power of two: the state tile is padded to 8
u, delta, z = torch.randn(batch, length, E), 0.5 * torch.randn(batch, length, E), torch.randn(batch, length, E)
x_dbl = torch.randn(batch, length, 3 + 2 * N)
B, C = x_dbl[..., 3 : 3 + N], x_dbl[..., 3 + N :]  # strided views, as the mixer passes them
A, D, bias = -0.5 - torch.rand(E, N), torch.randn(E), 0.5 * torch.randn(E)
initial = torch.randn(batch, E, N)
errors = {}
for name, chunk, h0 in (("zero start, 6 chunks", 8, None), ("initial state, 3 chunks", 16, initial)):
    y, last = chunked_selective_scan(u, delta, A, B, C, D, z, bias, initial_state=h0, chunk_size=chunk)
    ref, ref_last = selective_scan(
        *(t.transpose(1, 2) for t in (u, delta)), A, B.transpose(1, 2), C.transpose(1, 2), D,
        z.transpose(1, 2), bias, True, initial_state=torch.zeros(batch, E, N) if h0 is None else h0,
        return_last_state=True, impl="torch",
    )
    errors[name] = [(y - ref.transpose(1, 2)).abs().max().item(), (last - ref_last).abs().max().item()]
    # Each channel's arithmetic is its own: 2 blocks of 16 channels (the last partial) give the
    # numbers of the default block, 64 channels of which these 24 fill part
    y_blocks, last_blocks = chunked_selective_scan(u, delta, A, B, C, D, z, bias, initial_state=h0,
                                                   chunk_size=chunk, block_e=16)  # fmt: skip
    errors[f"{name}, blocks of 16 channels against the default"] = [(y_blocks - y).abs().max().item(),
                                                                    (last_blocks - last).abs().max().item()]

# The backward pass: 6 chunks (the last one partial) x 2 sequences, 12 tiles for the 3 programs
# it runs under the interpreter, so each loops over tiles; B and C strided views of one tensor
leaves = [t.clone().requires_grad_() for t in (u, delta, A, x_dbl, D, z, bias)]
u_, delta_, A_, x_dbl_, D_, z_, bias_ = leaves
B_, C_ = x_dbl_[..., 3 : 3 + N], x_dbl_[..., 3 + N :]
grad = torch.randn(batch, length, E)
y, _ = chunked_selective_scan(u_, delta_, A_, B_, C_, D_, z_, bias_, chunk_size=8)
ours = torch.autograd.grad(y, leaves, grad, retain_graph=True)  # B_, C_ are in both graphs
ref = selective_scan(*(t.transpose(1, 2) for t in (u_, delta_)), A_, B_.transpose(1, 2), C_.transpose(1, 2), D_,
                     z_.transpose(1, 2), bias_, True, impl="torch")  # fmt: skip
expected = torch.autograd.grad(ref.transpose(1, 2), leaves, grad)
errors["gradients, relative"] = [((a - e).abs().max() / e.abs().max()).item() for a, e in zip(ours, expected)]

# bf16 B and C with an even number of states are read as int32 pairs of states; the same
# values in float32 are read one by one. Both paths must give the same numbers. With 22 states
# the high state tile (8) ends in a pair past the last state.
N2 = 22
x_pairs = torch.randn(batch, length, 4 + 2 * N2).bfloat16()
A2 = -0.5 - torch.rand(E, N2)
results = []
for x_bc in (x_pairs, x_pairs.float()):
    leaves = [t.clone().requires_grad_() for t in (u, delta, A2, x_bc, D, z, bias)]
    u_, delta_, A_, x_bc_, D_, z_, bias_ = leaves
    y, last = chunked_selective_scan(u_, delta_, A_, x_bc_[..., 4 : 4 + N2], x_bc_[..., 4 + N2 :], D_, z_, bias_,
                                     chunk_size=8)  # fmt: skip
    results.append([y, last, *torch.autograd.grad(y, leaves, grad)])  # the last state too
errors["bf16 pairs of states against float32"] = [(a.float() - b.to(a.dtype).float()).abs().max().item()
                                                  for a, b in zip(*results)]  # fmt: skip

mixer = Mamba(8, d_state=4, expand=3, impl="torch")
x = torch.randn(2, 37, 8)
u, z = mixer.project_in_time_major(x)
time_major = mixer.ssm_time_major(u, z, "")
reference, _ = mixer.ssm(u.transpose(1, 2), z.transpose(1, 2), "")
errors["mixer"] = [(time_major - reference.transpose(1, 2)).abs().max().item()]
params = [p for name, p in mixer.named_parameters() if not name.startswith("out_proj")]  # not in ssm
ours = torch.autograd.grad(time_major.square().sum(), params, retain_graph=True)  # in_proj: in both
expected = torch.autograd.grad(reference.square().sum(), params)
errors["mixer gradients, relative"] = [((a - e).abs().max() / e.abs().max()).item()
                                       for a, e in zip(ours, expected) if e.abs().max() > 0]  # fmt: skip

for groups, width, taps in ((4, 6, 8), (2, 16, 5)):  # channels padded to 16, or not padded
    x = torch.randn(3, 37 + taps - 1, groups * width, requires_grad=True)
    w = (0.2 * torch.randn(groups * width, width, taps)).requires_grad_()
    b = torch.randn(groups * width, requires_grad=True)
    grad = torch.randn(3, 37, groups * width)
    y = grouped_conv1d(x, w, b, groups=groups, block_t=16)  # 3 frame blocks, the last one partial
    ours = torch.autograd.grad(y, (x, w, b), grad)
    reference = F.conv1d(x.transpose(1, 2), w, b, groups=groups).transpose(1, 2)
    expected = torch.autograd.grad(reference, (x, w, b), grad)
    errors[f"grouped conv {groups} x {width}"] = [(y - reference).abs().max().item(), float(y.shape != reference.shape)]
    errors[f"grouped conv {groups} x {width} gradients"] = [(a - e).abs().max().item() for a, e in zip(ours, expected)]

# Depthwise conv: 3 frame blocks (the last partial) x 2 channel blocks (the last partial), in
# both layouts the mixers pass; without bias and SiLU too
cases = (("time-major", True, True), ("channel-major", True, True), ("time-major", False, False))
for layout, silu, with_bias in cases:
    E, K, length = 20, 4, 37
    x = torch.randn(2, length, E) if layout == "time-major" else torch.randn(2, E, length).transpose(1, 2)
    x.requires_grad_()
    w = torch.randn(E, K, requires_grad=True)
    b = torch.randn(E, requires_grad=True) if with_bias else None
    grad = torch.randn(2, length, E)
    y = depthwise_conv1d_silu(x, w, b, silu=silu, block_t=16, block_c=16)
    ours = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], grad)
    reference = F.conv1d(x.transpose(1, 2), w[:, None], b, padding=K - 1, groups=E)[..., :length].transpose(1, 2)
    reference = F.silu(reference) if silu else reference
    expected = torch.autograd.grad(reference, [t for t in (x, w, b) if t is not None], grad)
    name = f"depthwise conv {layout}, silu {silu}, bias {with_bias}"
    errors[name] = [(y - reference).abs().max().item(), float(y.stride() != x.stride())]
    errors[name + " gradients"] = [(a - e).abs().max().item() for a, e in zip(ours, expected)]

# LayerNorm + GELU: 74 rows in 5 row blocks (the last partial), walked by 3 backward programs;
# 20 channels in a tile of 32; rows far from zero mean, as a conv's output may be
x = (3 * torch.randn(2, 37, 20) + 2).requires_grad_()
w, b = (1 + 0.5 * torch.randn(20)).requires_grad_(), torch.randn(20, requires_grad=True)
grad = torch.randn(2, 37, 20)
y = layer_norm_gelu(x, w, b, eps=1e-5)
reference = F.gelu(F.layer_norm(x, (20,), w, b, eps=1e-5))
ours, expected = torch.autograd.grad(y, (x, w, b), grad), torch.autograd.grad(reference, (x, w, b), grad)
errors["layer norm + gelu"] = [(y - reference).abs().max().item()]
errors["layer norm + gelu gradients"] = [(a - e).abs().max().item() for a, e in zip(ours, expected)]

# The first layer's conv + LayerNorm + GELU, inference: 2 x 34 frames (68 rows, 5 row blocks of
# 16, the last partial) of a strided waveform, kernel 10 and stride 5, 20 channels; with and
# without a conv bias
audio = torch.randn(2, 200, 1)  # (batch, samples, 1), as the CNN's first layer gets it
wav = audio[:, 3:180, 0]
with torch.no_grad():
    for with_bias in (True, False):
        conv_w, conv_b = 0.3 * torch.randn(20, 1, 10), torch.randn(20) if with_bias else None
        y = waveform_conv_layer_norm_gelu(wav, conv_w, conv_b, 5, w, b, 1e-5)
        reference = F.gelu(F.layer_norm(F.conv1d(wav[:, None], conv_w, conv_b, stride=5).transpose(1, 2), (20,), w, b))
        errors[f"waveform conv + layer norm + gelu, conv bias {with_bias}"] = [
            (y - reference).abs().max().item(), float(y.shape != reference.shape)]

# One-frame streaming steps against the PyTorch ops on one frame: 300 channels in 2 blocks of the
# conv step (the last partial), 40 in 2 blocks of the state step, 5 states padded to 8; u a
# strided view, as the mixer passes it; B and C strided views of x_proj's output
from espnet_mamba.ops import causal_conv1d
from espnet_mamba.ops.single_step import depthwise_conv1d_step, selective_state_step

xz = torch.randn(3, 600)
conv_state, w, b = torch.randn(3, 300, 3), torch.randn(300, 4), torch.randn(300)
kept = conv_state.clone()
for silu, bias in ((True, b), (False, None)):
    y, new_state = depthwise_conv1d_step(xz[:, ::2], conv_state, w, bias, silu=silu)
    ref, ref_state = causal_conv1d(xz[:, ::2, None], w, bias, "silu" if silu else None, conv_state, impl="torch")
    errors[f"conv step, silu {silu}"] = [(y - ref[..., 0]).abs().max().item(),
                                         (new_state - ref_state).abs().max().item()]
E, N = 40, 5
u, delta, z = xz[:, : 2 * E : 2], 0.5 * torch.randn(3, E), torch.randn(3, E)
x_dbl = torch.randn(3, 2 + 2 * N)
B, C = x_dbl[:, 2 : 2 + N], x_dbl[:, 2 + N :]
A, D, bias, state = -0.5 - torch.rand(E, N), torch.randn(E), 0.5 * torch.randn(E), torch.randn(3, E, N)
state_kept = state.clone()
for name, extras in (("D, z, bias", (D, z, bias)), ("none of D, z, bias", (None, None, None))):
    y, new_state = selective_state_step(state, u, delta, A, B, C, *extras)
    D_, z_, bias_ = extras
    ref, ref_state = selective_scan(u[..., None], delta[..., None], A, B[..., None], C[..., None], D_,
                                    None if z_ is None else z_[..., None], bias_, True, initial_state=state,
                                    return_last_state=True, impl="torch")  # fmt: skip
    errors[f"state step, {name}"] = [(y - ref[..., 0]).abs().max().item(),
                                     (new_state - ref_state).abs().max().item()]
errors["steps leave their states, against the copies"] = [(conv_state - kept).abs().max().item(),
                                                          (state - state_kept).abs().max().item()]  # fmt: skip
print(json.dumps(errors))
"""


def _run_interpreted(code: str) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kernels_match_torch_in_triton_interpreter():
    errors = _run_interpreted(_CHECKS)
    assert set(errors) == {"zero start, 6 chunks", "initial state, 3 chunks", "gradients, relative", "mixer",
                           "mixer gradients, relative", "grouped conv 4 x 6",
                           "grouped conv 4 x 6 gradients", "grouped conv 2 x 16", "grouped conv 2 x 16 gradients",
                           *(f"depthwise conv {name}{part}" for name in ("time-major, silu True, bias True",
                             "channel-major, silu True, bias True", "time-major, silu False, bias False")
                             for part in ("", " gradients")),
                           "layer norm + gelu", "layer norm + gelu gradients",
                           *(f"waveform conv + layer norm + gelu, conv bias {bias}" for bias in (True, False)),
                           "bf16 pairs of states against float32",
                           "zero start, 6 chunks, blocks of 16 channels against the default",
                           "initial state, 3 chunks, blocks of 16 channels against the default",
                           "conv step, silu True", "conv step, silu False", "state step, D, z, bias",
                           "state step, none of D, z, bias", "steps leave their states, against the copies"}  # fmt: skip
    for name, values in errors.items():
        assert max(values) < 1e-4, (name, values)
    exact = [name for name in errors if "against" in name]
    assert all(max(errors[name]) == 0 for name in exact), {name: errors[name] for name in exact}


def test_default_chunk_size_grows_as_sqrt_of_length_within_bounds():
    assert default_chunk_size(1) == 32
    assert default_chunk_size(16384) == 128
    assert default_chunk_size(8192) == 128
    assert default_chunk_size(32000) == 256
    assert default_chunk_size(10**7) == 512
    assert train_chunk_size(750) == 64  # a 15 s utterance in training
    assert train_chunk_size(16000) == 128


def test_chunked_scan_refuses_initial_state_with_autograd_odd_chunks_bad_block_widths_and_layouts():
    u = torch.randn(1, 10, 4, requires_grad=True)
    args = (torch.randn(1, 10, 4), -torch.rand(4, 2), torch.randn(1, 10, 2), torch.randn(1, 10, 2),
            torch.ones(4), torch.randn(1, 10, 4), torch.zeros(4))  # fmt: skip
    with pytest.raises(RuntimeError, match="starts from a zero state"):
        chunked_selective_scan(u, *args, initial_state=torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="chunk_size must be even"):
        chunked_selective_scan(u, *args, chunk_size=5)
    with pytest.raises(ValueError, match="block_e must be a power of two"):
        chunked_selective_scan(u, *args, block_e=48)
    huge, huge_states = (torch.zeros(1, 1, n).expand(2**16, 2**15, n) for n in (4, 2))  # 2^33 elements, no memory
    with torch.no_grad(), pytest.raises(ValueError, match="32-bit offsets"):
        chunked_selective_scan(huge, huge, -torch.rand(4, 2), huge_states, huge_states, torch.ones(4), huge,
                               torch.zeros(4))  # fmt: skip
    with torch.no_grad(), pytest.raises(ValueError, match="u must be"):
        chunked_selective_scan(u.transpose(1, 2).contiguous().transpose(1, 2), *args)
    delta, A, B, C, D, z, bias = args  # parameters of other sizes would be read past their ends
    for wrong in (dict(A=-torch.rand(3, 2)), dict(D=torch.ones(3)), dict(delta_bias=torch.zeros(5))):
        name = next(iter(wrong))
        with torch.no_grad(), pytest.raises(ValueError, match=f"{name} must be"):
            chunked_selective_scan(**{**dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias), **wrong})
    with torch.no_grad(), pytest.raises(ValueError, match="initial_state must be"):
        chunked_selective_scan(u, *args, initial_state=torch.zeros(1, 4, 3))


def test_chunked_scan_is_not_chosen_on_cpu_and_checks_impl():
    x = torch.zeros(1, backend.CHUNKED_SCAN_MIN_FRAMES, 8)
    assert not backend.use_chunked_scan("auto", x, needs_grad=False)  # GPU only: tests/test_gpu.py
    with pytest.raises(ValueError, match="ssm impl"):
        backend.use_chunked_scan("triton", x, needs_grad=False)


class _CudaInput:
    """What the path choice reads of a CUDA input (its device and shape), without a GPU."""

    is_cuda = True

    def __init__(self, *shape):
        self.shape = shape


def test_chunked_scan_is_chosen_by_length_and_where_mamba_ssm_is_missing(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    frames = backend.CHUNKED_SCAN_MIN_FRAMES
    short, long = _CudaInput(1, frames - 1, 8), _CudaInput(1, frames, 8)
    monkeypatch.setattr(backend, "mamba_kernels", lambda: {"selective_scan_fn": object()})
    assert not backend.use_chunked_scan("auto", short, needs_grad=False)
    assert backend.use_chunked_scan("auto", long, needs_grad=False)
    assert not backend.use_chunked_scan("auto", _CudaInput(2, 1000, 8), needs_grad=True)  # 2000 frames in all
    assert backend.use_chunked_scan("auto", _CudaInput(8, 750, 8), needs_grad=True)
    monkeypatch.setattr(backend, "mamba_kernels", lambda: None)  # no mamba-ssm: the chunked scan at any length
    assert backend.use_chunked_scan("auto", short, needs_grad=False)
    assert backend.use_chunked_scan("auto", _CudaInput(1, 1, 8), needs_grad=True)
    # "kernel" asks for mamba-ssm's kernels on short input (use_kernel then names what is missing)
    assert not backend.use_chunked_scan("kernel", short, needs_grad=False)
    assert not backend.use_chunked_scan("torch", long, needs_grad=False)


def test_grouped_conv_refuses_bad_shapes_and_32_bit_overflow():
    x, w, b = torch.randn(1, 20, 8), torch.randn(8, 4, 3), torch.zeros(8)
    with pytest.raises(ValueError, match="unit stride on D"):
        grouped_conv1d(x, w, b, groups=4)
    with pytest.raises(ValueError, match="fewer than the 3 taps"):
        grouped_conv1d(x[:, :2], w, b, groups=2)
    with pytest.raises(ValueError, match="bias \\(8,\\)"):
        grouped_conv1d(x, torch.randn(8, 2, 3), torch.zeros(4), groups=4)
    huge = torch.zeros(1, 1, 8).expand(2**14, 2**14, 8)  # 2^31 elements, no memory
    with pytest.raises(ValueError, match="32-bit offsets"):
        grouped_conv1d(huge, torch.zeros(8, 2, 3), b, groups=4)


def test_depthwise_conv_refuses_bad_shapes_and_32_bit_overflow():
    with pytest.raises(ValueError, match="weight \\(E, K\\)"):
        depthwise_conv1d_silu(torch.zeros(1, 20, 8), torch.zeros(6, 4), None)
    with pytest.raises(ValueError, match="bias \\(E,\\)"):
        depthwise_conv1d_silu(torch.zeros(1, 20, 8), torch.zeros(8, 4), torch.zeros(6))
    huge = torch.zeros(1, 1, 8).expand(2**14, 2**14, 8)  # 2^31 elements, no memory
    with pytest.raises(ValueError, match="32-bit offsets"):
        depthwise_conv1d_silu(huge, torch.zeros(8, 4), None)
    sparse_view = torch.empty_strided((2, 4, 8), (2**31, 8, 1), device="meta")  # 64 elements 2^31 apart
    with pytest.raises(ValueError, match="32-bit offsets"):
        depthwise_conv1d_silu(sparse_view, torch.zeros(8, 4, device="meta"), None)


def test_layer_norm_gelu_refuses_bad_shapes_and_32_bit_overflow():
    with pytest.raises(ValueError, match="weight and bias of shape \\(8,\\)"):
        layer_norm_gelu(torch.zeros(2, 5, 8), torch.ones(6), torch.zeros(6))
    huge = torch.zeros(1, 1, 8).expand(2**14, 2**14, 8)  # 2^31 elements, no memory
    with pytest.raises(ValueError, match="32-bit offsets"):
        layer_norm_gelu(huge, torch.ones(8), torch.zeros(8))


def test_waveform_conv_layer_norm_gelu_refuses_what_it_cannot_run():
    weights = dict(conv_weight=torch.ones(8, 1, 10), conv_bias=None, stride=5, weight=torch.ones(8),
                   bias=torch.zeros(8))
    with pytest.raises(ValueError, match="conv_weight must be \\(C, 1, K\\)"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 100), **{**weights, "conv_weight": torch.ones(8, 2, 10)})
    with pytest.raises(ValueError, match="weight must be \\(8,\\)"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 100), **{**weights, "weight": torch.ones(6)})
    with pytest.raises(ValueError, match="unit stride along samples"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 100, 2)[..., 0], **weights)
    with pytest.raises(ValueError, match="computes no gradients"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 100, requires_grad=True), **weights)
    with pytest.raises(ValueError, match="computes no gradients"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 100), **{**weights, "weight": torch.ones(8, requires_grad=True)})
    with pytest.raises(ValueError, match="9 samples are fewer than the conv's kernel of 10"):
        waveform_conv_layer_norm_gelu(torch.zeros(2, 9), **weights)
    huge = torch.zeros(1, 2**18).expand(2**16, 2**18)  # 2^16 x 52427 frames x 8 channels > 2^31, 1 MiB
    with pytest.raises(ValueError, match="32-bit offsets"):
        waveform_conv_layer_norm_gelu(huge, **weights)


def test_needs_autograd_follows_grad_mode_input_and_parameters():
    layer = torch.nn.Linear(2, 2)
    x = torch.zeros(1, 2)
    assert backend.needs_autograd(x, *layer.parameters())
    with torch.no_grad():
        assert not backend.needs_autograd(x.requires_grad_(), *layer.parameters())
    layer.requires_grad_(False)  # a frozen module in a training run
    assert not backend.needs_autograd(torch.zeros(1, 2), *layer.parameters())
    assert backend.needs_autograd(torch.zeros(1, 2, requires_grad=True), *layer.parameters())


def test_one_frame_step_kernels_refuse_what_they_cannot_run():
    from espnet_mamba.ops.single_step import depthwise_conv1d_step, selective_state_step

    x, conv_state, w = torch.zeros(2, 8), torch.zeros(2, 8, 3), torch.ones(8, 4)
    with pytest.raises(ValueError, match="conv_state \\(batch, E, K - 1\\)"):
        depthwise_conv1d_step(x, torch.zeros(2, 8, 4), w, None)
    with pytest.raises(ValueError, match="bias \\(E,\\) expected"):
        depthwise_conv1d_step(x, conv_state, w, torch.ones(6))
    with pytest.raises(ValueError, match="computes no gradients"):
        depthwise_conv1d_step(x, conv_state, w.requires_grad_(), None)
    state, u, A, BC = torch.zeros(2, 8, 4), torch.zeros(2, 8), -torch.ones(8, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="u \\(batch, E\\) and A \\(E, N\\) expected"):
        selective_state_step(state, u[None], u, A, BC, BC)
    with pytest.raises(ValueError, match="C must be \\(2, 4\\)"):
        selective_state_step(state, u, u, A, BC, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="state must be \\(2, 8, 4\\)"):
        selective_state_step(state[:1], u, u, A, BC, BC)
    with pytest.raises(ValueError, match="computes no gradients"):
        selective_state_step(state, u, u, A.requires_grad_(), BC, BC)
    huge = torch.zeros(1, 1, 4).expand(2**15, 2**15, 4)  # 2^32 elements, no memory
    with pytest.raises(ValueError, match="32-bit offsets"):
        selective_state_step(huge, torch.zeros(1, 1).expand(2**15, 2**15), torch.zeros(1, 1).expand(2**15, 2**15),
                             -torch.ones(2**15, 4), torch.zeros(2**15, 4), torch.zeros(2**15, 4))  # fmt: skip


def test_one_frame_steps_run_pytorch_on_cpu_and_under_autograd():
    """On CPU, or where a gradient is needed, the step ops run their PyTorch twins (the one-frame
    scan), which keep the graph; the kernels are for CUDA, under no_grad (tests/test_gpu.py)."""
    from espnet_mamba.ops import causal_conv1d_update, selective_state_update

    u = torch.randn(2, 8, requires_grad=True)
    y, conv_state = causal_conv1d_update(u, torch.zeros(2, 8, 3), torch.ones(8, 4), None)
    y2, state = selective_state_update(torch.zeros(2, 8, 4), y, u, -torch.ones(8, 4), torch.ones(2, 4),
                                       torch.ones(2, 4))  # fmt: skip
    assert y2.requires_grad and conv_state.shape == (2, 8, 3) and state.shape == (2, 8, 4)
    (grad,) = torch.autograd.grad(y2.sum(), u)
    assert grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        selective_state_update(torch.zeros(2, 8, 4), u.detach(), u.detach(), -torch.ones(8, 4), torch.ones(2, 4),
                               torch.ones(2, 4), impl="kernel")  # fmt: skip
