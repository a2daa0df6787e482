"""The Mamba-HuBERT backbone: presets, shapes, causality, padding, streaming, gradients, input
checks. Behaviour is tested on tiny models (conftest.tiny_overrides); sizes on full ones."""

import io

import pytest
import torch
import torch.nn.functional as F

import espnet_mamba
from espnet_mamba.nn.feature_extractor import HUBERT_CONV_LAYERS, FeatureExtractor
from espnet_mamba.nn.positional import ConvPositionalEmbedding
from espnet_mamba.validation import checked_lengths

FAMILIES = (
    "causal_transformer", "conbimamba", "extbimamba", "innbimamba", "mamba", "mamba_mlp", "transformer"
)
PRESETS = [f"{family}_{size}" for family in FAMILIES for size in ("base", "small")]
CAUSAL_PRESETS = [p for p in PRESETS if p.startswith(("mamba", "causal_transformer"))]
BIDIRECTIONAL_PRESETS = [p for p in PRESETS if p not in CAUSAL_PRESETS]

# Millions of parameters of build_model(preset), from the reference table in papers.md
# (computed from the published configuration). The causal Transformer differs from the
# bidirectional one only by the CNN's per-frame LayerNorms (under 0.01M).
REFERENCE_PARAMETERS_M = {
    "mamba_base": 78.20,
    "transformer_base": 94.70,
    "causal_transformer_base": 94.70,
    "mamba_mlp_base": 94.75,
    "extbimamba_base": 146.74,
    "mamba_small": 23.50,
    "transformer_small": 22.38,
    "causal_transformer_small": 22.38,
    "mamba_mlp_small": 32.96,
}

RECEPTIVE_FIELD, HOP = 400, 320


def expected_frames(samples: int) -> int:
    """Frames of the HuBERT CNN: one per 320-sample hop once 400 samples are in."""
    return (samples - RECEPTIVE_FIELD) // HOP + 1 if samples >= RECEPTIVE_FIELD else 0


def random_wavs(*lengths: int, seed: int = 0):
    """A right-padded batch (batch, max length) of noise with its lengths; the padding is loud
    noise too, so any leak of padding into real frames shows."""
    g = torch.Generator().manual_seed(seed)
    wavs = 10 * torch.randn(len(lengths), max(lengths), generator=g)
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wavs, torch.tensor(lengths)


# Presets and configuration --------------------------------------------------------------------


def test_list_presets_returns_the_fourteen_sorted_names():
    assert espnet_mamba.list_presets() == sorted(PRESETS)


@pytest.mark.parametrize("preset", sorted(REFERENCE_PARAMETERS_M))
def test_full_size_parameter_counts(preset):
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        model = espnet_mamba.build_model(preset)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - REFERENCE_PARAMETERS_M[preset]) < 0.05, count


def test_six_layer_extbimamba_base_parameter_count():
    with torch.device("meta"):
        model = espnet_mamba.build_model("extbimamba_base", num_layers=6)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 78.19) < 0.05


@pytest.mark.parametrize("preset", PRESETS)
def test_full_size_presets_match_their_names(preset):
    with torch.device("meta"):
        model = espnet_mamba.build_model(preset)
    cfg = model.cfg
    assert cfg.d_model == (768 if preset.endswith("_base") else 384)
    assert len(model.backbone.layers) == cfg.num_layers == 12
    assert cfg.causal == (preset in CAUSAL_PRESETS)
    assert model.backbone.feature_extractor.mode == ("layer_norm" if cfg.causal else "group_norm")
    assert model.backbone.feature_extractor.receptive_field == RECEPTIVE_FIELD
    assert model.backbone.feature_extractor.stride == HOP


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown preset 'mamba_huge'"):
        espnet_mamba.build_model("mamba_huge")


def test_unknown_override_raises():
    with pytest.raises(ValueError, match="d_modle"):
        espnet_mamba.build_model("mamba_small", d_modle=64)


def test_bidirectional_layer_cannot_be_causal():
    with pytest.raises(ValueError, match="bidirectional"):
        espnet_mamba.load_config("extbimamba_small", causal=True)


@pytest.mark.parametrize("preset, field, value", [
    ("transformer_small", "ffn_dim", 0), ("conbimamba_small", "ffn_dim", 0), ("extbimamba_small", "bi_combine", "mean"),
    ("mamba_small", "ssm_impl", "Torch"), ("mamba_small", "scan_chunk_size", 0), ("mamba_small", "pos_conv_kernel", -1),
])  # fmt: skip
def test_config_rejects_bad_values_when_it_is_made(preset, field, value):
    """Not at the first forward (ssm_impl, scan_chunk_size) nor silently (a Transformer with a
    feed-forward sublayer of width 0)."""
    with pytest.raises(ValueError, match=field):
        espnet_mamba.load_config(preset, **{field: value})


@pytest.mark.parametrize("kernel", [127, 128, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_positional_conv_keeps_the_frame_count_for_odd_and_even_kernels(kernel, causal):
    """fairseq pads k // 2 frames each side and drops the last output for even k only."""
    conv = ConvPositionalEmbedding(32, kernel, groups=4, causal=causal)
    assert conv(torch.randn(2, 50, 32)).shape == (2, 50, 32)


# Shapes and frame counts ----------------------------------------------------------------------


def test_cnn_frame_lengths_follow_the_floor_rule():
    lengths = torch.arange(0, 20000)
    expected = torch.tensor([expected_frames(n) for n in range(20000)])
    assert torch.equal(FeatureExtractor(conv_layers=HUBERT_CONV_LAYERS).output_lengths(lengths), expected)


@pytest.mark.parametrize("mode", ["layer_norm", "group_norm"])
def test_cnn_in_inference_runs_time_segments_that_give_the_frames_of_one_pass(mode):
    """Without autograd every layer runs one segment of output frames at a time (its activations,
    not the whole input's, are alive), the first one's GroupNorm with statistics from a pass of
    its own; the frames must be those of one pass, which the CNN runs where autograd is on."""
    torch.manual_seed(0)
    cnn = FeatureExtractor(mode, conv_bias=True)
    wavs, lens = random_wavs(16000, 11000)  # 49 and 33 frames
    whole, whole_lens = cnn(wavs, lens)  # parameters require grad: one pass
    whole = whole.detach()
    samples_convolved, inputs_seen = [], []
    first, convolve = cnn.conv_layers[0], cnn.conv_layers[0]._convolve
    first._convolve = lambda x: samples_convolved.append(x.shape[1]) or convolve(x)
    for layer in cnn.conv_layers[1:]:
        layer.register_forward_pre_hook(lambda _, args: inputs_seen.append(args[0].shape[1]))
    cnn.segment_frames = 10
    with torch.no_grad():
        segmented, segmented_lens = cnn(wavs, lens)
    torch.testing.assert_close(segmented[0], whole[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(segmented[1, :33], whole[1, :33], rtol=1e-6, atol=1e-6)
    # padding frames: loud noise normalised by the real frames' small variance, whose float32
    # rounding differs between one sum and sums over blocks (GroupNorm)
    torch.testing.assert_close(segmented[1, 33:], whole[1, 33:], rtol=1e-4, atol=1e-4)
    assert torch.equal(segmented_lens, whole_lens)
    assert len(inputs_seen) == 5 * 6  # 5 segments (4 x 10 frames, 9), 6 layers each
    # layer 2's input for 10 output frames: the receptive field of layers 2-7 over layer 1's frames
    assert max(inputs_seen) == (10 - 1) * 64 + 79 < whole.shape[1] * 64
    # the first layer's conv: segments, and in group_norm mode blocks of 640 frames before them
    assert len(samples_convolved) == (5 if mode == "layer_norm" else 5 + 5)
    assert max(samples_convolved) <= (10 - 1) * 320 + 400 < wavs.shape[1]


def test_extract_features_frame_lengths_and_shapes(tiny_model):
    model = tiny_model("mamba_small")
    samples = [400, 719, 720, 1039, 1040, 5000]
    wavs, lens = random_wavs(*samples)
    with torch.no_grad():
        hs, frame_lens = model.extract_features(wavs, lens)
    assert frame_lens.tolist() == [expected_frames(n) for n in samples] == [1, 1, 2, 2, 3, 15]
    assert len(hs) == model.cfg.num_layers + 1
    for h in hs:
        assert h.shape == (len(samples), 15, model.cfg.d_model)


def test_extract_features_without_lengths_uses_the_whole_batch(tiny_model):
    model = tiny_model("transformer_small")
    wavs, _ = random_wavs(3000, 3000)
    with torch.no_grad():
        hs, frame_lens = model.extract_features(wavs)
        hs_with, _ = model.extract_features(wavs, torch.tensor([3000, 3000]), sample_rate=16000)
    assert frame_lens.tolist() == [expected_frames(3000)] * 2
    for h, h_with in zip(hs, hs_with):
        torch.testing.assert_close(h, h_with, rtol=0, atol=0)


# Causality and padding ------------------------------------------------------------------------


def perturbed_after(wavs: torch.Tensor, sample: int) -> torch.Tensor:
    changed = wavs.clone()
    changed[:, sample:] = torch.randn(changed[:, sample:].shape, generator=torch.Generator().manual_seed(9))
    return changed


@pytest.mark.parametrize("preset", CAUSAL_PRESETS)
@pytest.mark.parametrize("sample", [1000, 3007])
def test_causal_presets_never_see_the_future(tiny_model, preset, sample):
    model = tiny_model(preset)
    wavs, _ = random_wavs(8000)
    with torch.no_grad():
        hs, _ = model.extract_features(wavs)
        hs_changed, _ = model.extract_features(perturbed_after(wavs, sample))
    past = expected_frames(sample)  # frames whose receptive field ends at or before `sample`
    assert past >= 2
    for h, h_changed in zip(hs, hs_changed):
        torch.testing.assert_close(h_changed[:, :past], h[:, :past], rtol=0, atol=1e-6)
        assert not torch.allclose(h_changed[:, past:], h[:, past:])


@pytest.mark.parametrize(
    "preset", ["transformer_small", "extbimamba_small", "innbimamba_small", "conbimamba_small"]
)
def test_bidirectional_presets_do_see_the_future(tiny_model, preset):
    """The control for the causality test: it does detect look-ahead."""
    model = tiny_model(preset)
    wavs, _ = random_wavs(8000)
    with torch.no_grad():
        first = model.extract_features(wavs)[0][-1][:, 0]
        first_changed = model.extract_features(perturbed_after(wavs, 7000))[0][-1][:, 0]
    assert not torch.allclose(first, first_changed)


@pytest.mark.parametrize("preset", PRESETS)
def test_padding_changes_nothing(tiny_model, preset):
    model = tiny_model(preset)
    wavs, lens = random_wavs(5000, 9000)
    with torch.no_grad():
        alone, alone_lens = model.extract_features(wavs[:1, :5000])
        batch, batch_lens = model.extract_features(wavs, lens)
    assert alone_lens.tolist() == [15] and batch_lens.tolist() == [15, 27]
    assert len(batch) == model.cfg.num_layers + 1
    for h_alone, h_batch in zip(alone, batch):
        assert h_batch.shape == (2, 27, model.cfg.d_model)
        torch.testing.assert_close(h_batch[:1, :15], h_alone, rtol=1e-5, atol=1e-5)


# Streaming ------------------------------------------------------------------------------------


def stream_in_chunks(model, wavs: torch.Tensor, sizes, max_frames=None):
    """Stream ``wavs`` in chunks of ``sizes`` samples, checking the frames each call emits;
    returns the hidden states of all emitted frames, concatenated."""
    state = model.init_stream(wavs.shape[0], max_frames=max_frames)
    emitted, consumed = [], 0
    for size in sizes:
        hs, state = model.stream(wavs[:, consumed : consumed + size], state)
        new_frames = expected_frames(consumed + size) - expected_frames(consumed)
        assert len(hs) == model.cfg.num_layers + 1
        assert all(h.shape == (wavs.shape[0], new_frames, model.cfg.d_model) for h in hs)
        consumed += size
        assert state.samples == consumed
        emitted.append(hs)
    assert consumed == wavs.shape[1]
    return [torch.cat(layer, dim=1) for layer in zip(*emitted)]


def irregular_chunks(total: int):
    sizes = [1, 399, 1, 1000, 7, 0, 320, 319, 321, 2]
    return sizes + [total - sum(sizes)]


def random_chunks(total: int):
    g = torch.Generator().manual_seed(5)
    sizes = []
    while sum(sizes) < total:
        sizes.append(min(int(torch.randint(0, 700, (), generator=g)), total - sum(sizes)))
    return sizes


CHUNKINGS = {
    "irregular": irregular_chunks,
    "hop_320": lambda total: [HOP] * (total // HOP) + [total % HOP],
    "one_chunk": lambda total: [total],
    "random": random_chunks,
}


# The causal presets, and mamba_base with biases in its CNN's convs (ModelConfig.conv_bias)
STREAMED_MODELS = [(preset, {}) for preset in CAUSAL_PRESETS] + [("mamba_base", {"conv_bias": True})]


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("preset, overrides", STREAMED_MODELS,
                         ids=[p + "-conv_bias" * bool(o) for p, o in STREAMED_MODELS])  # fmt: skip
def test_streaming_equals_offline(tiny_model, preset, overrides, chunking):
    model = tiny_model(preset, scan_chunk_size=4, **overrides)
    wavs, _ = random_wavs(6000, 6000)
    with torch.no_grad():
        offline, _ = model.extract_features(wavs)
    streamed = stream_in_chunks(model, wavs, CHUNKINGS[chunking](wavs.shape[1]))
    for h_stream, h_offline in zip(streamed, offline):
        assert h_stream.shape == h_offline.shape
        torch.testing.assert_close(h_stream, h_offline, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["mamba_base", "mamba_mlp_base", "causal_transformer_base"])
def test_streaming_one_sample_at_a_time_equals_offline(tiny_model, preset):
    model = tiny_model(preset)
    wavs, _ = random_wavs(2000)
    with torch.no_grad():
        offline, _ = model.extract_features(wavs)
    streamed = stream_in_chunks(model, wavs, [1] * wavs.shape[1])
    for h_stream, h_offline in zip(streamed, offline):
        torch.testing.assert_close(h_stream, h_offline, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("preset", ["causal_transformer_base", "mamba_base"])
def test_streaming_with_fixed_capacity_caches_equals_offline(tiny_model, preset, chunking):
    """``max_frames``: the Transformer's caches are allocated once; Mamba ignores it."""
    model = tiny_model(preset)
    wavs, _ = random_wavs(6000, 6000)
    with torch.no_grad():
        offline, _ = model.extract_features(wavs)
    frames = offline[0].shape[1]
    streamed = stream_in_chunks(model, wavs, CHUNKINGS[chunking](wavs.shape[1]), max_frames=frames)
    for h_stream, h_offline in zip(streamed, offline):
        torch.testing.assert_close(h_stream, h_offline, rtol=1e-5, atol=1e-5)


def test_stream_past_the_cache_capacity_raises(tiny_model):
    model = tiny_model("causal_transformer_base")
    state = model.init_stream(1, max_frames=10)
    _, state = model.stream(torch.randn(1, 3280), state)  # (3280 - 400) // 320 + 1 = 10 frames
    with pytest.raises(ValueError, match="capacity of 10"):
        model.stream(torch.randn(1, 320), state)
    assert state.samples == 3280 and int(state.layers[0].length) == 10  # the state is left as it was


def test_stream_step_keeps_no_graph_where_grad_mode_is_on(tiny_model):
    """A CUDA graph captures stream_step itself (benchmarking.GraphedStreamStep), outside stream's
    no_grad: the inference kernels choose by whether a gradient is needed, so none must be."""
    model = tiny_model("mamba_base")
    assert torch.is_grad_enabled() and all(p.requires_grad for p in model.parameters())
    hidden, state = model.stream_step(torch.randn(1, 720), model.init_stream(1))
    assert hidden[-1].shape[1] == 2
    assert not any(t.requires_grad for t in [*hidden, state.layers[0].conv, state.layers[0].ssm])


@pytest.mark.parametrize("preset", BIDIRECTIONAL_PRESETS)
def test_init_stream_on_a_bidirectional_preset_raises(tiny_model, preset):
    with pytest.raises(RuntimeError, match="causal"):
        tiny_model(preset).init_stream(1)


# Checkpoints and training ---------------------------------------------------------------------


def features(model, wavs, lens):
    with torch.no_grad():
        return model.extract_features(wavs, lens)[0]


@pytest.mark.parametrize("preset", PRESETS)
def test_state_dict_round_trip(tiny_model, preset):
    source = tiny_model(preset, seed=0)
    target = tiny_model(preset, seed=1)
    wavs, lens = random_wavs(3000, 4000)
    assert not torch.allclose(features(source, wavs, lens)[-1], features(target, wavs, lens)[-1])
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True))
    for h_source, h_target in zip(features(source, wavs, lens), features(target, wavs, lens)):
        assert torch.equal(h_source, h_target)


@pytest.mark.parametrize("preset", ["mamba_base", "innbimamba_base", "extbimamba_base"])
def test_torch_state_dict_loads_into_auto_model(tiny_model, preset):
    torch_model = tiny_model(preset, ssm_impl="torch")
    auto_model = tiny_model(preset, seed=1, ssm_impl="auto")
    auto_model.load_state_dict(torch_model.state_dict())  # strict: same names and shapes
    wavs, lens = random_wavs(3000, 4000)
    for h_torch, h_auto in zip(features(torch_model, wavs, lens), features(auto_model, wavs, lens)):
        torch.testing.assert_close(h_auto, h_torch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_parameter_gets_a_gradient(tiny_model, preset):
    model = tiny_model(preset).train()  # dropout is 0, so train mode is deterministic
    wavs, lens = random_wavs(4000, 6000)
    g = torch.Generator().manual_seed(1)
    frames = expected_frames(6000)
    mask = torch.rand(2, frames, generator=g) < 0.5
    mask[:, 0] = True
    labels = torch.randint(0, model.cfg.num_classes, (2, frames), generator=g)
    logits, frame_lens = model(wavs, lens, mask)
    assert logits.shape == (2, frames, model.cfg.num_classes)
    valid = torch.arange(frames)[None] < frame_lens[:, None]
    F.cross_entropy(logits[valid], labels[valid]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def cnn_norm_bias_gradient(model, wavs: torch.Tensor) -> float:
    """The largest gradient norm of the CNN's LayerNorm biases, for the mean square of the last
    block's output."""
    model.zero_grad()
    hs, _ = model.extract_features(wavs)
    hs[-1].square().mean().backward()
    return max(layer.layer_norm.bias.grad.norm().item() for layer in model.backbone.feature_extractor.conv_layers)


@pytest.mark.parametrize("remedy", [{}, {"conv_bias": True}, {"dither": 3e-5}], ids=["none", "conv_bias", "dither"])
def test_digital_silence_inflates_the_causal_cnn_gradients_unless_conv_bias_or_dither(tiny_model, remedy):
    """At initialisation, exact-zero samples stay zero through a LayerNorm CNN without conv
    biases, and each LayerNorm multiplies their gradient by up to 1/sqrt(eps): HuBERT's default,
    a known issue (docs/asr.md). With ``conv_bias``, or ``dither`` in training, the gradient is
    that of faint noise."""
    model = tiny_model("mamba_base", dropout=0.0, dropout_input=0.0, **remedy).train()
    g = torch.Generator().manual_seed(0)
    silence = 0.1 * torch.randn(1, 8000, generator=g)
    silence[:, 2000:6000] = 0.0
    faint = silence.clone()
    faint[:, 2000:6000] = 1e-4 * torch.randn(1, 4000, generator=g)
    ratio = cnn_norm_bias_gradient(model, silence) / cnn_norm_bias_gradient(model, faint)
    if remedy.get("conv_bias"):
        assert all(layer.conv.bias is not None for layer in model.backbone.feature_extractor.conv_layers)
    if remedy:
        assert ratio < 10, ratio
    else:
        assert ratio > 1e3, ratio  # the input does show the issue


def test_dither_adds_noise_to_the_waveform_in_training_only(tiny_model):
    model = tiny_model("mamba_base", dither=1e-3)
    seen = []
    model.backbone.feature_extractor.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    wavs = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.extract_features(wavs)
        model.train()
        model.extract_features(wavs)
        model.extract_features(wavs)
    assert torch.equal(seen[0], wavs)
    first, second = seen[1] - wavs, seen[2] - wavs
    assert abs(first.std().item() - 1e-3) < 5e-5 and abs(first.mean().item()) < 5e-5
    assert not torch.allclose(first, second)  # new noise each step
    with pytest.raises(ValueError, match="dither"):
        espnet_mamba.load_config("mamba_base", dither=-1.0)


@pytest.mark.parametrize("preset", ["mamba_small", "innbimamba_small", "transformer_small"])
def test_recomputing_the_cnn_and_blocks_gives_the_same_gradients(tiny_model, preset):
    """Dropout on: the recomputed forward must draw the same masks as the first one. The CNN
    runs in time segments, which must give the frames of one whole pass."""
    def gradients(**recompute):
        model = tiny_model(preset, dropout=0.2, attention_dropout=0.2, **recompute).train()
        model.backbone.feature_extractor.segment_frames = 5  # 12 and 18 frames: several segments
        torch.manual_seed(3)
        logits, _ = model(*random_wavs(4000, 6000))
        logits.square().mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    stored = gradients()
    recomputed = gradients(recompute_cnn=True, recompute_blocks=True)
    assert stored.keys() == recomputed.keys()
    for name, grad in stored.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_recomputing_the_blocks_keeps_fewer_activations(tiny_model):
    def saved_bytes(**recompute):
        model = tiny_model("mamba_small", **recompute).train()
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(*random_wavs(16000))
        return sum(total)

    stored, recomputed = saved_bytes(), saved_bytes(recompute_blocks=True)
    assert recomputed < 0.5 * stored, (recomputed, stored)


# Input checks ---------------------------------------------------------------------------------


def noise_with(position: int, value: float):
    wavs = torch.randn(1, 2000)
    wavs[0, position] = value
    return wavs


BAD_INPUTS = {
    "sample_rate_8000": (lambda: (torch.randn(1, 16000), None, 8000), "16000"),
    "stereo": (lambda: (torch.randn(1, 2, 16000), None, None), "mono.*channels"),
    "empty": (lambda: (torch.zeros(1, 0), None, None), "empty"),
    "empty_in_batch": (lambda: (torch.randn(2, 1000), torch.tensor([1000, 0]), None), "empty"),
    "399_samples": (lambda: (torch.randn(1, 399), None, None), "400"),
    "nan": (lambda: (noise_with(5, float("nan")), None, None), "NaN"),
    "inf": (lambda: (noise_with(1999, float("inf")), None, None), "Inf"),
    "integer_audio": (lambda: (torch.zeros(1, 16000, dtype=torch.int16), None, None), "floating-point"),
    "lengths_too_long": (lambda: (torch.randn(2, 1000), torch.tensor([1000, 1200]), None), "wav_lens"),
    "relative_lengths": (lambda: (torch.randn(2, 1000), torch.tensor([1.0, 0.5]), None), "integer sample counts"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_a_value_error_naming_the_problem(tiny_model, case):
    make, message = BAD_INPUTS[case]
    wavs, lens, sample_rate = make()
    with pytest.raises(ValueError, match=message):
        tiny_model("mamba_small").extract_features(wavs, lens, sample_rate)


@pytest.mark.parametrize("case", ["stereo", "empty", "399_samples", "nan"])
def test_pretraining_forward_checks_its_input(tiny_model, case):
    make, message = BAD_INPUTS[case]
    wavs, lens, _ = make()
    lens = lens if lens is not None else torch.full((wavs.shape[0],), wavs.shape[-1])
    with pytest.raises(ValueError, match=message):
        tiny_model("mamba_small")(wavs, lens)


@pytest.mark.parametrize("mask", [torch.zeros(12, dtype=torch.bool), torch.zeros(2, 11, dtype=torch.bool),
                                  torch.zeros(2, 12)])  # fmt: skip
def test_pretraining_forward_checks_its_mask(tiny_model, mask):
    """(batch, frames) bool only: a mask of one utterance would be broadcast to the batch."""
    with pytest.raises(ValueError, match="mask must be a bool tensor \\(batch, frames\\) = \\(2, 12\\)"):
        tiny_model("mamba_small")(torch.randn(2, 4000), torch.tensor([4000, 3000]), mask)


def test_checked_lengths_come_on_the_device_and_the_cpu():
    wavs = torch.randn(3, 1000)
    lengths, host = checked_lengths(wavs, torch.tensor([1000, 700, 400]), None, 400)
    assert host.device.type == "cpu" and host.tolist() == [1000, 700, 400] and torch.equal(lengths, host)
    # without wav_lens, and without values (meta), the CPU copy comes from the shape alone
    lengths, host = checked_lengths(torch.empty(2, 900, device="meta"), None, None, 400)
    assert lengths.is_meta and host.device.type == "cpu" and host.tolist() == [900, 900]


def test_forward_hands_frame_lengths_from_the_cpu_copy_to_the_blocks(tiny_model, monkeypatch):
    model = tiny_model("mamba_small")
    seen = []
    encode = model.backbone.encode
    monkeypatch.setattr(model.backbone, "encode", lambda x, lengths: seen.append(lengths) or encode(x, lengths))
    wavs, lens = torch.randn(2, 4000), torch.tensor([4000, 2500])
    _, lengths = model(wavs, lens)
    model.extract_features(wavs, lens)
    expected = model.backbone.feature_extractor.output_lengths(lens)
    assert torch.equal(lengths, expected)
    assert [(t.device.type, t.tolist()) for t in seen] == [("cpu", expected.tolist())] * 2


@pytest.mark.parametrize("case", ["stereo", "nan", "inf"])
def test_stream_checks_its_chunks(tiny_model, case):
    make, message = BAD_INPUTS[case]
    wavs, _, _ = make()
    model = tiny_model("mamba_small")
    with pytest.raises(ValueError, match=message):
        model.stream(wavs, model.init_stream(1))


def test_mamba_stream_starts_its_conv_state_in_the_dtype_of_what_it_holds(monkeypatch):
    """The conv state holds in_proj's outputs, bfloat16 under autocast; causal-conv1d's step
    kernel refuses a state of another dtype than its input."""
    import espnet_mamba.nn.mamba as mamba_module

    seen, update = [], mamba_module.causal_conv1d_update
    monkeypatch.setattr(mamba_module, "causal_conv1d_update",
                        lambda x, state, *args: seen.append((x.dtype, state.dtype)) or update(x, state, *args))
    mixer = mamba_module.Mamba(32, d_state=4, expand=2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixer.forward_chunk(torch.randn(1, 1, 32), None)
    assert seen == [(torch.bfloat16, torch.bfloat16)]


def test_a_model_cast_to_bfloat16_is_refused_with_the_way_to_run_it(tiny_model):
    model = tiny_model("mamba_small").to(torch.bfloat16)
    with pytest.raises(ValueError, match="parameters are torch.bfloat16: .* torch.autocast"):
        model.extract_features(torch.randn(1, 4000))
    with pytest.raises(ValueError, match="torch.autocast"):
        model.stream(torch.randn(1, 800), model.init_stream(1))


def test_stream_checks_the_chunk_against_the_state_batch(tiny_model):
    model = tiny_model("mamba_small")
    with pytest.raises(ValueError, match="chunk holds 3 streams, the state 2"):
        model.stream(torch.randn(3, 800), model.init_stream(2))
