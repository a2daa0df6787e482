"""The rewritten hot spots against the plain definitions they replace.

The waveform CNN runs its convs as matrix products over unfolded windows, channels last; the
streaming positional conv multiplies windows by weights; Mamba pads frames on CUDA (to a
multiple of 8, or of 2048 for long inputs). Each must compute what the textbook form computes.
"""

import pytest
import torch
import torch.nn.functional as F

import espnet_mamba.nn.bidirectional as bidirectional
import espnet_mamba.nn.mamba as mamba
from espnet_mamba.nn.bidirectional import ExtBiMamba, InnBiMamba
from espnet_mamba.nn.feature_extractor import FeatureExtractor
from espnet_mamba.nn.positional import ConvPositionalEmbedding

SMALL_CNN = ((32, 10, 5), (32, 3, 2), (32, 2, 2))


def cnn_reference(extractor: FeatureExtractor, wavs: torch.Tensor, lengths=None) -> torch.Tensor:
    """The CNN as fairseq writes it: Conv1d on (batch, C, L), norms, GELU."""
    x = wavs[:, None, :]
    for layer in extractor.conv_layers:
        x = layer.conv(x)
        if layer.norm_type == "layer_norm":
            x = layer.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif layer.norm_type == "group_norm":
            x = layer.layer_norm(x)  # whole-utterance statistics: full-length input only
        x = F.gelu(x)
    return x.transpose(1, 2)


@pytest.mark.parametrize("mode", ["layer_norm", "group_norm"])
def test_channels_last_cnn_equals_conv1d_definition(mode):
    torch.manual_seed(0)
    extractor = FeatureExtractor(mode, SMALL_CNN)
    wavs = torch.randn(2, 1234)
    ours, lengths = extractor(wavs, torch.tensor([1234, 1234]))
    reference = cnn_reference(extractor, wavs)
    assert ours.shape == reference.shape and lengths.tolist() == [reference.shape[1]] * 2
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_group_norm_statistics_skip_padding_frames():
    """An utterance padded in a batch is normalised as it is alone."""
    torch.manual_seed(0)
    extractor = FeatureExtractor("group_norm", SMALL_CNN)
    wavs = torch.randn(2, 1500) + 3.0  # an offset: the mean is far from 0
    alone, _ = extractor(wavs[:1, :1000], torch.tensor([1000]))
    batched, lengths = extractor(wavs, torch.tensor([1000, 1500]))
    torch.testing.assert_close(batched[:1, : lengths[0]], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1:], cnn_reference(extractor, wavs[1:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["layer_norm", "group_norm"])
def test_channels_last_cnn_gradients_equal_conv1d_definition(mode):
    torch.manual_seed(0)
    extractor = FeatureExtractor(mode, SMALL_CNN)
    wavs = torch.randn(1, 800)
    ours = torch.autograd.grad(extractor(wavs)[0].square().sum(), list(extractor.parameters()))
    reference = torch.autograd.grad(cnn_reference(extractor, wavs).square().sum(), list(extractor.parameters()))
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_positional_conv_streaming_windows_equal_the_offline_conv():
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(32, kernel_size=16, groups=4, causal=True)
    x = torch.randn(2, 40, 32)
    offline = pos(x)
    history, pieces = None, []
    for start in range(0, 40, 7):
        y, history = pos.forward_chunk(x[:, start : start + 7], history)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), offline, rtol=1e-5, atol=1e-6)


@pytest.fixture
def always_pad(monkeypatch):
    """pad_frames as on CUDA, on any device."""

    def pad(x):
        return F.pad(x, (0, 0, 0, mamba.padded_length(x.shape[1]) - x.shape[1]))

    monkeypatch.setattr(mamba, "pad_frames", pad)
    monkeypatch.setattr(bidirectional, "pad_frames", pad)


@pytest.mark.parametrize("make", [lambda: mamba.Mamba(32, expand=2, impl="torch"),
                                  lambda: ExtBiMamba(32, expand=2, impl="torch"),
                                  lambda: InnBiMamba(32, expand=2, impl="torch")],
                         ids=["mamba", "extbimamba", "innbimamba"])  # fmt: skip
def test_padding_frames_for_the_kernels_changes_nothing(make, request):
    torch.manual_seed(0)
    mixer = make()
    x = torch.randn(2, 13, 32)
    lengths = torch.tensor([13, 9])
    call = (lambda t: mixer(t)) if isinstance(mixer, mamba.Mamba) and not isinstance(mixer, InnBiMamba) else (
        lambda t: mixer(t, lengths)
    )
    plain = call(x)
    request.getfixturevalue("always_pad")
    padded = call(x)
    assert padded.shape == plain.shape == (2, 13, 32)
    torch.testing.assert_close(padded, plain, rtol=1e-5, atol=1e-6)


def test_padded_length_aligns_to_8_then_to_the_scan_chunk_for_long_inputs():
    assert [mamba.padded_length(n) for n in (1, 8, 13, 16383, 16384, 31999, 32769)] == [
        8, 8, 16, 16384, 16384, 32768, 34816,
    ]
