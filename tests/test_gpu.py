"""On a CUDA machine: our PyTorch path and Triton kernels against the mamba-ssm kernels (where
mamba-ssm is built), and the model's equivalences (padding, causality, streaming) on the GPU.

Skipped, with the reason shown, where there is no GPU (CI), and the comparisons with mamba-ssm
where it is not built. Run on the GPU
machine with ``python -m pytest tests/test_gpu.py -v``; docs/benchmarks.md records the run.
Tolerances are mamba-ssm's own tests': fp32 rtol 6e-4 / atol 2e-3, bf16 rtol 3e-2 / atol 5e-2.
"""

import pytest
import torch
import torch.nn.functional as F

import espnet_mamba
from espnet_mamba.nn.bidirectional import ExtBiMamba, InnBiMamba
from espnet_mamba.nn.mamba import Mamba
from espnet_mamba.ops import backend, causal_conv1d, chunked_scan, chunked_selective_scan, mamba_kernels, selective_scan

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# the tests that compare with mamba-ssm's kernels or run them; the others test our Triton kernels
# and the model's equivalences, with or without the GPU extra
needs_mamba_ssm = pytest.mark.skipif(torch.cuda.is_available() and mamba_kernels() is None,  # else: no GPU
                                     reason="needs mamba-ssm (./setup.sh --cuda)")


@pytest.fixture(scope="module", autouse=True)
def exact_float32_convolutions():
    """cuDNN's default TF32 rounds differently for different batch shapes, which would hide a
    real padding leak behind ~1e-3 noise. Set for this module's tests only, not at import."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
TOL = {torch.float32: dict(rtol=6e-4, atol=2e-3), torch.bfloat16: dict(rtol=3e-2, atol=5e-2)}
DEVICE = "cuda"


def _scan_inputs(dtype, batch=2, channels=64, state=16, length=300, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, device=DEVICE, generator=g, dtype=torch.float32).to(dt).requires_grad_()

    A = (-0.5 - torch.rand(channels, state, device=DEVICE, generator=g)).requires_grad_()
    return dict(
        u=rnd(batch, channels, length), delta=(0.5 * rnd(batch, channels, length)).detach().requires_grad_(),
        A=A, B=rnd(batch, state, length), C=rnd(batch, state, length), D=rnd(channels, dt=torch.float32),
        z=rnd(batch, channels, length), delta_bias=(0.5 * rnd(channels, dt=torch.float32)).detach().requires_grad_(),
    )  # fmt: skip


def _grads(out, inputs):
    out.float().square().sum().backward()
    grads = {k: v.grad.clone() for k, v in inputs.items()}
    for v in inputs.values():
        v.grad = None
    return grads


@needs_mamba_ssm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_scan_torch_matches_kernel(dtype):
    inputs = _scan_inputs(dtype)
    kernel = selective_scan(**inputs, delta_softplus=True, impl="kernel")
    kernel_grads = _grads(kernel, inputs)
    ours = selective_scan(**inputs, delta_softplus=True, impl="torch")
    our_grads = _grads(ours, inputs)
    assert ours.dtype == kernel.dtype
    torch.testing.assert_close(ours, kernel, **TOL[dtype])
    for name in inputs:
        scale = kernel_grads[name].abs().max().clamp(min=1)
        torch.testing.assert_close(our_grads[name] / scale, kernel_grads[name] / scale, **TOL[dtype], msg=name)


@needs_mamba_ssm
def test_selective_scan_last_state_matches_kernel():
    inputs = {k: v.detach() for k, v in _scan_inputs(torch.float32).items()}
    _, kernel_state = selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl="kernel")
    _, our_state = selective_scan(**inputs, delta_softplus=True, return_last_state=True, impl="torch")
    torch.testing.assert_close(our_state, kernel_state, **TOL[torch.float32])


def _conv_inputs(dtype, layout, channels=300, length=1000):
    """x (2, E, L) in either layout, weight (E, 4), bias (E,), all requiring grad, and an
    output gradient (2, E, L)."""
    shape = (2, channels, length) if layout == "channel-major" else (2, length, channels)
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)
    x = (x if layout == "channel-major" else x.transpose(1, 2)).requires_grad_()
    weight = torch.randn(channels, 4, device=DEVICE).requires_grad_()
    grad = torch.randn(2, channels, length, device=DEVICE, dtype=dtype)
    return (x, weight, torch.randn(channels, device=DEVICE).requires_grad_()), grad


@needs_mamba_ssm
@pytest.mark.parametrize("layout", ["channel-major", "time-major"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_conv1d_triton_matches_torch_with_gradients(dtype, layout, monkeypatch):
    monkeypatch.setitem(mamba_kernels(), "causal_conv1d_fn", None)  # ours where causal-conv1d is installed too
    inputs, grad = _conv_inputs(dtype, layout)  # E 300: not a multiple of 8, nor of the channel block
    kernel, kernel_state = causal_conv1d(*inputs, "silu", impl="kernel")
    assert kernel.stride() == inputs[0].stride()
    ours, our_state = causal_conv1d(inputs[0].float(), *inputs[1:], "silu", impl="torch")  # float32 sums
    torch.testing.assert_close(kernel.float(), ours, **TOL[dtype])
    torch.testing.assert_close(kernel_state, our_state.to(dtype))
    for got, want in zip(torch.autograd.grad(kernel, inputs, grad), torch.autograd.grad(ours, inputs, grad.float())):
        torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])


@needs_mamba_ssm
@pytest.mark.skipif(torch.cuda.is_available() and mamba_kernels() is not None
                    and mamba_kernels()["causal_conv1d_fn"] is None, reason="needs causal-conv1d")
@pytest.mark.parametrize("layout", ["channel-major", "time-major"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_conv1d_triton_matches_causal_conv1d_kernel(dtype, layout, monkeypatch):
    inputs, grad = _conv_inputs(dtype, layout, channels=304)  # causal-conv1d's channel-last needs E % 8 == 0
    theirs = mamba_kernels()["causal_conv1d_fn"](*inputs, activation="silu")
    monkeypatch.setitem(mamba_kernels(), "causal_conv1d_fn", None)  # so causal_conv1d runs ours
    ours, _ = causal_conv1d(*inputs, "silu", impl="kernel")
    torch.testing.assert_close(ours, theirs, **TOL[dtype])
    for got, want in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(theirs, inputs, grad)):
        torch.testing.assert_close(got, want, **TOL[dtype])


@needs_mamba_ssm
@pytest.mark.parametrize("mixer_class", [Mamba, InnBiMamba])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixer_paths_agree_and_share_state_dict(mixer_class, dtype):
    torch.manual_seed(0)
    kernel = mixer_class(128, d_state=24, expand=3, impl="kernel").to(DEVICE)
    ours = mixer_class(128, d_state=24, expand=3, impl="torch").to(DEVICE)
    ours.load_state_dict(kernel.state_dict())
    x = torch.randn(2, 250, 128, device=DEVICE)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        a, b = kernel(x), ours(x)
    torch.testing.assert_close(b.float(), a.float(), **TOL[dtype])
    a.float().square().mean().backward()
    b.float().square().mean().backward()
    for (name, p), q in zip(kernel.named_parameters(), ours.parameters()):
        scale = p.grad.abs().max().clamp(min=1e-3)
        torch.testing.assert_close(q.grad / scale, p.grad / scale, **TOL[dtype], msg=name)


@needs_mamba_ssm
def test_our_mamba_equals_mamba_ssm_module():
    from mamba_ssm.modules.mamba_simple import Mamba as UpstreamMamba

    torch.manual_seed(0)
    upstream = UpstreamMamba(128, d_state=24, d_conv=4, expand=3).to(DEVICE)
    ours = Mamba(128, d_state=24, d_conv=4, expand=3, impl="kernel").to(DEVICE)
    ours.load_state_dict(upstream.state_dict())
    x = torch.randn(2, 203, 128, device=DEVICE)
    torch.testing.assert_close(ours(x), upstream(x), rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    torch_path = Mamba(128, d_state=24, d_conv=4, expand=3, impl="torch").to(DEVICE)
    torch_path.load_state_dict(upstream.state_dict())
    torch.testing.assert_close(torch_path(x), upstream(x), **TOL[torch.float32])


def _tiny(preset, **kw):
    overrides = dict(d_model=128, num_layers=2, heads=4, dropout=0.0, dropout_input=0.0, attention_dropout=0.0)
    return espnet_mamba.build_model(preset, **{**overrides, **kw}).to(DEVICE).eval()


@pytest.mark.parametrize("preset", ["mamba_base", "mamba_mlp_base", "extbimamba_base", "innbimamba_base",
                                    "conbimamba_base", "causal_transformer_base"])
def test_model_padding_invariance_on_gpu(preset):
    model = _tiny(preset)
    wavs = torch.randn(2, 24000, device=DEVICE)
    lengths = torch.tensor([24000, 13000], device=DEVICE)
    with torch.no_grad():
        batch, frame_lengths = model.extract_features(wavs, lengths)
        alone, _ = model.extract_features(wavs[1:, :13000])
    n = int(frame_lengths[1])
    for b, a in zip(batch, alone):
        torch.testing.assert_close(b[1, :n], a[0], rtol=1e-4, atol=1e-4)


def test_blocks_take_frame_lengths_on_the_cpu():
    # ESPnet's adapters pass the frame lengths from the CPU (no wait for the GPU mid-step)
    model = _tiny("mamba_base")
    x = torch.randn(2, 75, 128, device=DEVICE)
    for lengths in ([75, 40], [75, 75]):
        with torch.no_grad():
            on_gpu = model.backbone.encode(x, torch.tensor(lengths, device=DEVICE))
            on_cpu = model.backbone.encode(x, torch.tensor(lengths))
        for a, b in zip(on_gpu, on_cpu, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_mamba_ssm
@pytest.mark.parametrize("lengths", [None, [24000, 13000]])
@pytest.mark.parametrize("path", ["chunked", "fused"])
def test_training_step_reads_the_gpu_once(path, lengths, recwarn, monkeypatch):
    # The input checks read the device once; nothing after them waits for the GPU, on our
    # kernels (the chunked scan of long batches, our depthwise conv) and on mamba-ssm's fused
    # mamba_inner_fn of short batches alike
    if path == "fused":
        if mamba_kernels()["causal_conv1d_fn"] is None:
            pytest.skip("mamba_inner_fn needs causal-conv1d")
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_TRAIN_FRAMES", 10**9)
    else:
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_TRAIN_FRAMES", 0)
        monkeypatch.setitem(mamba_kernels(), "causal_conv1d_fn", None)
    model = _tiny("mamba_base").train()
    wavs = torch.randn(2, 24000, device=DEVICE)
    wav_lens = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    model(wavs, wav_lens)[0].float().square().mean().backward()  # compiles the kernels
    torch.cuda.synchronize()
    recwarn.clear()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        logits, _ = model(wavs, wav_lens)
        logits.float().square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    # torch also warns, once per process, that the debug mode is a prototype: not a wait
    syncs = [w for w in recwarn if "called a synchronizing CUDA operation" in str(w.message)]
    assert len(syncs) == 1 and syncs[0].filename.endswith("validation.py"), [(w.filename, w.lineno) for w in syncs]


@pytest.mark.parametrize("preset", ["mamba_base", "causal_transformer_base"])
def test_causality_and_streaming_on_gpu(preset):
    model = _tiny(preset)
    wav = torch.randn(1, 32000, device=DEVICE)
    changed = wav.clone()
    changed[:, 20000:] = torch.randn(1, 12000, device=DEVICE)
    with torch.no_grad():
        offline, _ = model.extract_features(wav)
        other, _ = model.extract_features(changed)
    unaffected = (20000 - 400) // 320 + 1
    for a, b in zip(offline, other):
        torch.testing.assert_close(a[:, :unaffected], b[:, :unaffected], rtol=0, atol=0)
    state, pieces, start = model.init_stream(1), [], 0
    for size in [1, 399, 320, 5000, 7, 26273]:
        hidden, state = model.stream(wav[:, start : start + size], state)
        pieces.append(hidden)
        start += size
    streamed = [torch.cat([p[i] for p in pieces], dim=1) for i in range(len(offline))]
    for a, b in zip(offline, streamed):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@needs_mamba_ssm
@pytest.mark.parametrize("kernels", ["mamba-ssm's", "ours"])
def test_one_frame_steps_on_single_step_kernels_match_offline(kernels, monkeypatch):
    """20 ms chunks: each Mamba step runs causal_conv1d_update + selective_state_update, on
    mamba-ssm's and causal-conv1d's kernels, or on our Triton ones (as where they are missing)."""
    if kernels == "ours":
        monkeypatch.setitem(mamba_kernels(), "causal_conv1d_update", None)
        monkeypatch.setitem(mamba_kernels(), "selective_state_update", None)
    model = _tiny("mamba_base")
    wav = torch.randn(1, 16000, device=DEVICE)
    with torch.no_grad():
        offline, _ = model.extract_features(wav)
    state = model.init_stream(1)
    hidden, state = model.stream(wav[:, :400], state)  # the first frame
    pieces = [hidden]
    for start in range(400, 16000 - 319, 320):
        hidden, state = model.stream(wav[:, start : start + 320], state)
        assert hidden[-1].shape[1] == 1
        pieces.append(hidden)
    streamed = [torch.cat([p[i] for p in pieces], dim=1) for i in range(len(offline))]
    for a, b in zip(offline, streamed):
        torch.testing.assert_close(b, a[:, : b.shape[1]], rtol=1e-4, atol=1e-4)


STEP_SHAPE = (3, 2304, 24)  # batch, and mamba_base's E and N: the one-frame step tests


@needs_mamba_ssm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_frame_conv_step_matches_causal_conv1ds(dtype):
    """Our Triton conv step against causal-conv1d's causal_conv1d_update, each given its own
    copy of the state; u a strided view, as in the mixer."""
    if mamba_kernels()["causal_conv1d_update"] is None:
        pytest.skip("needs causal-conv1d")
    from espnet_mamba.ops.single_step import depthwise_conv1d_step

    g, (batch, E, _) = torch.Generator(device=DEVICE).manual_seed(0), STEP_SHAPE
    u, _ = torch.randn(batch, 2 * E, device=DEVICE, generator=g).to(dtype).chunk(2, dim=1)
    conv_state = torch.randn(batch, E, 3, device=DEVICE, generator=g).to(dtype)
    weight, bias = torch.randn(E, 4, device=DEVICE, generator=g), torch.randn(E, device=DEVICE, generator=g)
    theirs_state = conv_state.clone()
    y, new_state = depthwise_conv1d_step(u, conv_state, weight, bias)
    expected = mamba_kernels()["causal_conv1d_update"](u, theirs_state, weight, bias, "silu")
    torch.testing.assert_close(y, expected, **TOL[dtype])
    torch.testing.assert_close(new_state, theirs_state, rtol=0, atol=0)  # the inputs, moved along


@needs_mamba_ssm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_frame_state_step_matches_mamba_ssms(dtype):
    """Our Triton state step against mamba-ssm's selective_state_update, each given its own
    copy of the state; u, z, B and C strided views, as in the mixer."""
    if mamba_kernels()["selective_state_update"] is None:
        pytest.skip("needs mamba-ssm's selective_state_update")
    from espnet_mamba.ops.single_step import selective_state_step

    g, (batch, E, N) = torch.Generator(device=DEVICE).manual_seed(0), STEP_SHAPE

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, device=DEVICE, generator=g).to(dt)

    u, z = rnd(batch, 2 * E).chunk(2, dim=1)
    state, delta, x_dbl = rnd(batch, E, N, dt=torch.float32), 0.5 * rnd(batch, E), rnd(batch, 48 + 2 * N)
    B, C = x_dbl[:, 48 : 48 + N], x_dbl[:, 48 + N :]
    A = -0.5 - torch.rand(E, N, device=DEVICE, generator=g)
    D, delta_bias = rnd(E, dt=torch.float32), rnd(E, dt=torch.float32)
    theirs_state = state.clone()
    y, new_state = selective_state_step(state, u, delta, A, B, C, D, z, delta_bias)
    expected = mamba_kernels()["selective_state_update"](theirs_state, u, delta, A, B, C, D, z=z, dt_bias=delta_bias,
                                                          dt_softplus=True)  # fmt: skip
    torch.testing.assert_close(y, expected, **TOL[dtype])
    torch.testing.assert_close(new_state, theirs_state, **TOL[torch.float32])


def _time_major(inputs):
    """selective_scan's (batch, E or N, L) inputs as the chunked scan's (batch, L, E or N)."""
    return {k: v.detach().transpose(1, 2).contiguous() if v.dim() == 3 else v.detach() for k, v in inputs.items()}


@needs_mamba_ssm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [None, 64])
def test_chunked_scan_matches_kernel(dtype, chunk_size):
    inputs = _scan_inputs(dtype, length=3001)
    with torch.no_grad():
        kernel = selective_scan(**inputs, delta_softplus=True, impl="kernel")
        ours, _ = chunked_selective_scan(**_time_major(inputs), chunk_size=chunk_size)
    assert ours.dtype == kernel.dtype
    torch.testing.assert_close(ours.transpose(1, 2), kernel, **TOL[dtype])


def test_chunked_scan_initial_and_last_state_match_torch():
    inputs = _scan_inputs(torch.float32, length=700)
    initial = torch.randn(2, 64, 16, device=DEVICE)
    with torch.no_grad():
        ref, ref_last = selective_scan(**inputs, delta_softplus=True, initial_state=initial,
                                       return_last_state=True, impl="torch")
        ours, last = chunked_selective_scan(**_time_major(inputs), initial_state=initial, chunk_size=64)
    torch.testing.assert_close(ours.transpose(1, 2), ref, **TOL[torch.float32])
    torch.testing.assert_close(last, ref_last, **TOL[torch.float32])


@needs_mamba_ssm
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("programs_per_sm", [8, 0.1])
def test_chunked_scan_gradients_match_kernel(dtype, programs_per_sm, monkeypatch):
    # 2 x 16 chunks of 64 frames (the last one partial) x 2 channel blocks: at 0.1 programs
    # per SM, fewer programs than tiles, so that programs loop over tiles as at full size
    monkeypatch.setattr(chunked_scan, "_GRAD_PROGRAMS_PER_SM", programs_per_sm)
    inputs = _scan_inputs(dtype, length=1001)
    expected = _grads(selective_scan(**inputs, delta_softplus=True, impl="kernel"), inputs)
    time_major = {k: v.detach().clone().requires_grad_() for k, v in _time_major(inputs).items()}
    ours, _ = chunked_selective_scan(**time_major)
    grads = _grads(ours, time_major)
    for name, grad in grads.items():
        grad = grad.transpose(1, 2) if grad.dim() == 3 else grad
        assert grad.dtype == expected[name].dtype, name
        rel = (grad.float() - expected[name].float()).abs().max() / expected[name].float().abs().max()
        assert rel < (2e-5 if dtype == torch.float32 else 1e-2), (name, rel.item())


@needs_mamba_ssm
@pytest.mark.parametrize("mixer_class", [Mamba, InnBiMamba, ExtBiMamba])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixer_chunked_scan_training_matches_kernel_path(mixer_class, dtype, monkeypatch):
    torch.manual_seed(0)
    mixer = mixer_class(128, d_state=24, expand=3, impl="kernel").to(DEVICE)
    x = torch.randn(2, 1000, 128, device=DEVICE)
    results = []
    for min_frames in (10**9, 1):  # mamba_inner_fn, then the chunked scan
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_TRAIN_FRAMES", min_frames)
        assert (mixer.forward_mamba if mixer_class is ExtBiMamba else mixer).runs_chunked_scan(x) == (min_frames == 1)
        mixer.zero_grad()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            y = mixer(x)
        y.float().square().mean().backward()
        results.append([y.float()] + [p.grad.float().clone() for p in mixer.parameters()])
    names = ["output"] + [name for name, _ in mixer.named_parameters()]
    for name, kernel, chunked in zip(names, *results):
        rel = (chunked - kernel).abs().max() / kernel.abs().max()
        assert rel < (1e-4 if dtype == torch.float32 else 3e-2), (name, rel.item())


@needs_mamba_ssm
@pytest.mark.parametrize("mixer_class", [Mamba, InnBiMamba, ExtBiMamba])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixer_chunked_scan_path_matches_kernel_path(mixer_class, dtype, monkeypatch):
    torch.manual_seed(0)
    mixer = mixer_class(128, d_state=24, expand=3, impl="kernel").to(DEVICE).eval()
    x = torch.randn(2, 1000, 128, device=DEVICE)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_FRAMES", 10**9)
        kernel = mixer(x)
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_FRAMES", 512)
        assert (mixer.forward_mamba if mixer_class is ExtBiMamba else mixer).runs_chunked_scan(x)
        chunked = mixer(x)
    torch.testing.assert_close(chunked.float(), kernel.float(), **TOL[dtype])


@needs_mamba_ssm
@pytest.mark.parametrize("preset", ["mamba_base", "innbimamba_base"])
def test_model_on_chunked_scan_matches_kernel_path_with_padding(preset, monkeypatch):
    model = _tiny(preset)
    wavs = torch.randn(2, 48000, device=DEVICE)
    lengths = torch.tensor([48000, 30000], device=DEVICE)
    with torch.no_grad():
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_FRAMES", 10**9)
        kernel, _ = model.extract_features(wavs, lengths)
        monkeypatch.setattr(backend, "CHUNKED_SCAN_MIN_FRAMES", 1)
        chunked, frame_lengths = model.extract_features(wavs, lengths)
        alone, _ = model.extract_features(wavs[1:, :30000])
    n = int(frame_lengths[1])
    for a, b, c in zip(kernel, chunked, alone):
        torch.testing.assert_close(b[0], a[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b[1, :n], c[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("products, limit", [("tf32", 3e-3), ("bf16", 1e-2), ("fp16", 3e-3)])
@pytest.mark.parametrize("causal", [False, True])
def test_positional_conv_kernels_match_cudnn_with_gradients(products, limit, causal, monkeypatch):
    """The Triton conv (TF32, or bf16 / fp16 under autocast) against cuDNN in exact float32: output
    and the gradients of x, the bias and the weight norm's g and v; each error is the largest
    difference over the largest reference value."""
    from espnet_mamba.nn.positional import ConvPositionalEmbedding

    torch.manual_seed(0)
    pos_conv = ConvPositionalEmbedding(768, causal=causal).to(DEVICE)
    torch.nn.init.normal_(pos_conv.conv.bias)
    x = torch.randn(2, 700, 768, device=DEVICE, requires_grad=True)
    grad = torch.randn(2, 700, 768, device=DEVICE)
    names, params = zip(*pos_conv.named_parameters())
    inputs = (x, *params)
    cudnn = pos_conv(x)  # TF32 off in this file: cuDNN in exact float32
    expected = torch.autograd.grad(cudnn, inputs, grad)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(products)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        ours = pos_conv(x)  # the Triton kernels
    found = torch.autograd.grad(ours, inputs, grad)
    assert ours.dtype == cudnn.dtype == torch.float32 and found[0].dtype == x.dtype
    for name, a, b in zip(("output", "x", *names), (ours, *found), (cudnn, *expected)):
        error = ((a.float() - b).abs().max() / b.abs().max()).item()
        assert error < limit, (name, error)


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_cnn_on_cudnn_nhwc_matches_cpu_product_with_gradients(mode):
    """The waveform CNN's layers run as cuDNN's NHWC conv on CUDA and as a product over the
    unfolded windows on CPU, and in layer_norm mode their LayerNorm + GELU as our Triton kernel
    on CUDA: same outputs and gradients in float32, padded batch included."""
    from espnet_mamba.nn.feature_extractor import FeatureExtractor

    torch.manual_seed(0)
    cnn = FeatureExtractor(mode, conv_bias=True)
    lengths = torch.tensor([8000, 6000])
    grads = []
    for device in ("cpu", DEVICE):
        cnn.to(device).zero_grad()
        x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1)).to(device).requires_grad_()
        features, _ = cnn(x, lengths.to(device))
        features.square().mean().backward()
        # copies: moving the module to CUDA moves the parameters' .grad tensors in place
        grads.append([t.detach().cpu().clone() for t in (features, x.grad, *(p.grad for p in cnn.parameters()))])
    for cpu, gpu in zip(*grads):
        torch.testing.assert_close(gpu, cpu, **TOL[torch.float32])


@pytest.mark.parametrize("autocast, limit", [(False, 5e-3), (True, 2e-2)])
def test_first_cnn_layer_in_inference_as_one_kernel_matches_the_eager_layer(autocast, limit):
    """In inference the causal CNN's first layer (conv, LayerNorm, GELU) runs as one Triton
    kernel, its conv a TF32 product: against the eager layer (float32 product, or bfloat16 under
    autocast, then the LayerNorm + GELU kernel). 2 x 24000 samples: 4799 frames, not a multiple
    of the row block."""
    from espnet_mamba.nn.feature_extractor import ConvLayer

    torch.manual_seed(0)
    layer = ConvLayer(1, 512, 10, 5, "layer_norm", bias=True).to(DEVICE)
    with torch.no_grad():
        layer.layer_norm.weight.add_(0.3 * torch.randn(512, device=DEVICE))
        layer.layer_norm.bias.add_(0.3 * torch.randn(512, device=DEVICE))
    x = torch.randn(2, 24000, 1, device=DEVICE)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            assert layer._runs_waveform_kernel(x)
            ours = layer(x)
        eager_input = x.clone().requires_grad_()  # a waveform that needs a gradient keeps the eager path
        assert not layer._runs_waveform_kernel(eager_input)
        eager = layer(eager_input).detach()
    assert ours.dtype == eager.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert ours.shape == (2, 4799, 512)
    error = ((ours.float() - eager.float()).abs().max() / eager.float().abs().max()).item()
    assert error < limit, error


def test_first_cnn_layer_past_32_bit_offsets_runs_the_eager_layer():
    """2**22 frames x 512 channels overrun the waveform kernel's and the LayerNorm + GELU
    kernel's 32-bit offsets (1310 s of audio at batch 1): the layer runs its PyTorch ops instead
    of raising, and its first frames are those of the kernel on a short prefix."""
    from espnet_mamba.nn.feature_extractor import ConvLayer

    torch.manual_seed(0)
    layer = ConvLayer(1, 512, 10, 5, "layer_norm", bias=False).to(DEVICE)
    x = torch.randn(1, 5 * (2**22 - 1) + 10, 1, device=DEVICE)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert not layer._runs_waveform_kernel(x) and layer._runs_waveform_kernel(x[:, :10000])
        whole = layer(x)
        prefix = layer(x[:, :10000])
    assert whole.shape == (1, 2**22, 512) and whole.dtype == torch.bfloat16
    error = ((whole[:, :1999].float() - prefix.float()).abs().max() / prefix.float().abs().max()).item()
    assert error < 2e-2, error


@pytest.mark.parametrize("mode", ["group_norm", "layer_norm"])
def test_cnn_in_inference_runs_time_segments_on_the_kernels(mode):
    """Without autograd on CUDA the frame-wise layers run in time segments, in layer_norm mode
    the first layer's one kernel on views of the padded waveform: the frames of one pass with
    autograd (the eager first layer), within its TF32 product's error."""
    from espnet_mamba.nn.feature_extractor import FeatureExtractor

    torch.manual_seed(0)
    cnn = FeatureExtractor(mode, conv_bias=True).to(DEVICE)
    wavs = torch.randn(2, 48000, device=DEVICE)
    lengths = torch.tensor([48000, 30000], device=DEVICE)
    whole, _ = cnn(wavs, lengths)
    cnn.segment_frames = 40  # 149 frames: 4 segments
    with torch.no_grad():
        segmented, _ = cnn(wavs, lengths)
    error = ((segmented - whole.detach()).abs().max() / whole.detach().abs().max()).item()
    assert error < (5e-3 if mode == "layer_norm" else 1e-5), error


@pytest.mark.parametrize("channels", [512, 300])
def test_layer_norm_gelu_kernel_matches_torch_under_autocast(channels):
    """The CNN's LayerNorm + GELU kernel on bfloat16 conv outputs, as autocast runs the
    PyTorch ops (the norm in float32, its output cast back): 2 x 1001 rows, not a multiple of
    the row block, and 300 channels, not a power of two."""
    from espnet_mamba.ops import layer_norm_gelu

    torch.manual_seed(0)
    x = (3 * torch.randn(2, 1001, channels, device=DEVICE) + 1).to(torch.bfloat16).requires_grad_()
    weight = (1 + 0.3 * torch.randn(channels, device=DEVICE)).requires_grad_()
    bias = (0.3 * torch.randn(channels, device=DEVICE)).requires_grad_()
    grad = torch.randn(2, 1001, channels, device=DEVICE, dtype=torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ours = layer_norm_gelu(x, weight, bias)
        reference = F.gelu(F.layer_norm(x, (channels,), weight, bias)).to(torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours, reference, **TOL[torch.bfloat16])
    our_grads = torch.autograd.grad(ours, (x, weight, bias), grad)
    reference_grads = torch.autograd.grad(reference, (x, weight, bias), grad)
    for name, a, b in zip(("x", "weight", "bias"), our_grads, reference_grads):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("preset", ["mamba_base", "causal_transformer_base"])
def test_graphed_stream_steps_carry_the_eager_state(preset):
    """The benchmark's CUDA-graph replay of 20 ms steps (fixed-capacity key/value caches for
    the Transformer) leaves the state that eager steps leave."""
    from espnet_mamba.benchmarking import GraphedStreamStep, tensors_of

    model = _tiny(preset)
    wav = torch.randn(1, 16000, device=DEVICE)
    chunks = [wav[:, start : start + 320] for start in range(0, 9600, 320)]
    with torch.no_grad():
        state = model.init_stream(1, max_frames=50)
        for chunk in chunks[:10]:  # until the CNN's buffers have their steady size
            _, state = model.stream(chunk, state)
        graphed = GraphedStreamStep(model, state, chunks[10], "float32")
        graphed.load(state)
        for chunk in chunks[10:]:
            graphed(chunk)
            _, state = model.stream(chunk, state)
    if preset == "causal_transformer_base":
        assert int(state.layers[0].length) == 29  # (9600 - 400) // 320 + 1 frames in the cache
    for replayed, eager in zip(tensors_of(graphed.state), tensors_of(state)):
        torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["mamba_base", "innbimamba_base", "transformer_base"])
def test_graphed_extraction_replays_the_eager_forward(preset):
    """The benchmark's CUDA-graph replay of ``extract_features`` gives its hidden states on new
    audio of the captured shape, and checks the audio as extract_features does."""
    from espnet_mamba.benchmarking import GraphedExtraction

    model = _tiny(preset)
    wavs = torch.randn(2, 48000, device=DEVICE)
    graphed = GraphedExtraction(model.backbone, wavs, "float32")
    new = torch.randn(2, 48000, device=DEVICE)
    replayed = [h.clone() for h in graphed(new)]
    with torch.no_grad():
        eager, _ = model.extract_features(new)
    assert len(replayed) == len(eager)
    for a, b in zip(replayed, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="captured for waveforms of shape"):
        graphed(new[:, :32000])
    with pytest.raises(ValueError, match="NaN"):
        graphed(torch.full_like(new, float("nan")))


@pytest.mark.parametrize("preset, recompute_cnn", [("mamba_base", True), ("innbimamba_base", False),
                                                   ("transformer_base", True)])  # fmt: skip
def test_graphed_training_step_replays_the_eager_gradients(preset, recompute_cnn):
    """The benchmark's CUDA-graph replay of a training step gives the loss and the gradients of
    an eager step on new audio (the CNN recomputed in the backward pass or not), and checks
    the audio as the model's forward does."""
    from espnet_mamba.benchmarking import GraphedTrainingStep, masked_loss, training_targets

    torch.manual_seed(0)
    model = _tiny(preset, recompute_cnn=recompute_cnn)
    wavs = torch.randn(2, 48000, device=DEVICE)
    mask, labels = training_targets(model, wavs)
    graphed = GraphedTrainingStep(model, wavs, mask, labels, "float32")
    new = torch.randn(2, 48000, device=DEVICE)
    replayed_loss = graphed(new).clone()
    replayed = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    logits, _ = model(new, None, mask)
    loss = masked_loss(logits, labels, mask)
    loss.backward()
    eager = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert replayed.keys() == eager.keys() and len(eager) > 10
    torch.testing.assert_close(replayed_loss, loss.detach(), rtol=1e-5, atol=1e-5)
    for name, grad in eager.items():
        if name.endswith("k_proj.bias"):  # zero but for rounding: a key bias adds the same to all of a query's scores
            scale = eager[name.replace("k_proj", "q_proj")].abs().max().item()
            assert max(replayed[name].abs().max().item(), grad.abs().max().item()) < 1e-3 * scale, name
            continue
        torch.testing.assert_close(replayed[name], grad, rtol=1e-3, atol=1e-4 * grad.abs().max().item(), msg=name)
    assert replayed["backbone.feature_proj.weight"].abs().sum() > 0  # the CNN's output reached the loss
    with pytest.raises(ValueError, match="captured for waveforms of shape"):
        graphed(new[:, :32000])
    with pytest.raises(ValueError, match="NaN"):
        graphed(torch.full_like(new, float("nan")))


def test_benchmark_replays_infer_and_train_from_cuda_graphs():
    from espnet_mamba.benchmarking import BenchmarkSpec, Setting, run_benchmark

    overrides = dict(d_model=128, num_layers=2, heads=4, recompute_cnn=True)
    settings = [Setting("infer", 1.0), Setting("train", 1.0)]
    spec = BenchmarkSpec(["mamba_base"], settings, device="cuda", overrides=overrides, repeat=2, warmup=1,
                         cuda_graphs=True)  # fmt: skip
    for result in run_benchmark(spec):
        assert result.status == "ok" and result.note == "cuda graph replayed", result.mode
        assert result.time_s > 0 and result.peak_mem_mib > 0


@pytest.mark.parametrize("mixer_class", [Mamba, InnBiMamba, ExtBiMamba])
@pytest.mark.parametrize("steps", [1, 7, 250])
def test_mixers_without_mamba_ssm_run_the_chunked_scan_at_any_length(mixer_class, steps, monkeypatch):
    """Where mamba-ssm does not import, "auto" takes the chunked scan even for short input
    (not our PyTorch scan), in inference and with autograd, and matches the PyTorch path."""
    torch.manual_seed(0)
    auto = mixer_class(128, d_state=24, expand=3, impl="auto").to(DEVICE)
    reference = mixer_class(128, d_state=24, expand=3, impl="torch").to(DEVICE)
    reference.load_state_dict(auto.state_dict())
    monkeypatch.setattr(backend, "mamba_kernels", lambda: None)
    x = torch.randn(2, steps, 128, device=DEVICE)
    assert (auto.forward_mamba if mixer_class is ExtBiMamba else auto).runs_chunked_scan(x)
    with torch.no_grad():
        torch.testing.assert_close(auto(x), reference(x), **TOL[torch.float32])
    y, y_ref = auto(x), reference(x)
    y.square().mean().backward()
    y_ref.square().mean().backward()
    for (name, p), q in zip(auto.named_parameters(), reference.parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        torch.testing.assert_close(p.grad / scale, q.grad / scale, **TOL[torch.float32], msg=name)
