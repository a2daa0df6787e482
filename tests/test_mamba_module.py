"""The Mamba mixer and its bidirectional wrappers."""

import pytest
import torch

from espnet_mamba.nn.bidirectional import ExtBiMamba, InnBiMamba, reorder_frames, reversal_index
from espnet_mamba.nn.mamba import Mamba

D_MODEL = 64

# Parameter names and shapes of mamba_ssm.modules.mamba_simple.Mamba(d_model=64, d_state=16,
# d_conv=4, expand=2), read from mamba_ssm/modules/mamba_simple.py in the mamba-ssm 2.3.2.post1
# sdist (bias=False, conv_bias=True; d_inner 128, dt_rank ceil(64 / 16) = 4).
MAMBA_SSM_PARAMETERS = {
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (36, 128),  # dt_rank 4 + 2 * d_state 16
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "A_log": (128, 16),
    "D": (128,),
    "out_proj.weight": (64, 128),
}
# The backward scan's parameters of Vision Mamba's "v2" block, named as there.
BACKWARD_PARAMETERS = {
    "conv1d_b.weight": (128, 1, 4),
    "conv1d_b.bias": (128,),
    "x_proj_b.weight": (36, 128),
    "dt_proj_b.weight": (128, 4),
    "dt_proj_b.bias": (128,),
    "A_b_log": (128, 16),
    "D_b": (128,),
}
MIXER_KWARGS = dict(d_state=16, d_conv=4, expand=2, impl="torch")


def parameter_shapes(module: torch.nn.Module) -> dict:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def test_mamba_has_the_parameters_of_mamba_ssm():
    assert parameter_shapes(Mamba(D_MODEL, **MIXER_KWARGS)) == MAMBA_SSM_PARAMETERS


def test_mamba_state_dict_has_no_buffers_beyond_the_parameters():
    assert set(Mamba(D_MODEL, **MIXER_KWARGS).state_dict()) == set(MAMBA_SSM_PARAMETERS)


def test_innbimamba_adds_the_backward_parameters():
    shapes = parameter_shapes(InnBiMamba(D_MODEL, **MIXER_KWARGS))
    assert shapes == {**MAMBA_SSM_PARAMETERS, **BACKWARD_PARAMETERS}


def test_innbimamba_backward_scan_is_initialised_like_the_forward_one():
    mixer = InnBiMamba(D_MODEL, **MIXER_KWARGS)
    assert torch.equal(mixer.A_b_log, mixer.A_log)
    assert torch.equal(mixer.D_b, mixer.D)
    dt_min, dt_max, _ = mixer.dt_range
    dt = torch.nn.functional.softplus(mixer.dt_proj_b.bias)
    assert dt.min() >= dt_min * 0.999 and dt.max() <= dt_max * 1.001


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_extbimamba_parameters(combine):
    shapes = parameter_shapes(ExtBiMamba(D_MODEL, combine=combine, **MIXER_KWARGS))
    expected = {f"{direction}_mamba.{name}": shape for direction in ("forward", "backward")
                for name, shape in MAMBA_SSM_PARAMETERS.items()}  # fmt: skip
    if combine == "concat":
        expected.update({"proj.weight": (D_MODEL, 2 * D_MODEL), "proj.bias": (D_MODEL,)})
    assert shapes == expected


def test_extbimamba_unknown_combine_raises():
    with pytest.raises(ValueError, match="combine"):
        ExtBiMamba(D_MODEL, combine="mean", **MIXER_KWARGS)


# reversal_index, reorder_frames -----------------------------------------------------------------


def reverse_padded(x, lengths, dim=1):
    return reorder_frames(x, reversal_index(lengths, x.shape[dim], x.device), dim)


def test_reversal_reverses_each_sequence_and_keeps_padding_in_place():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5)[..., None]  # (batch 2, L 5, 1)
    lengths = torch.tensor([5, 3])
    y = reverse_padded(x, lengths)
    assert y[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert y[1, :, 0].tolist() == [7, 6, 5, 8, 9]


@pytest.mark.parametrize("dim", [1, 2])
def test_reversal_is_its_own_inverse(dim):
    x = torch.randn(3, 7, 7, 2)
    lengths = torch.tensor([7, 1, 4])
    y = reverse_padded(x, lengths, dim=dim)
    assert not torch.equal(y, x)
    assert torch.equal(reverse_padded(y, lengths, dim=dim), x)


@pytest.mark.parametrize("dim", [1, 2])
def test_reversal_without_lengths_flips(dim):
    x = torch.randn(2, 6, 6)
    assert reversal_index(None, 6, "cpu").shape == (6,)
    assert torch.equal(reverse_padded(x, None, dim=dim), x.flip(dim))
    assert torch.equal(reverse_padded(x, torch.tensor([6, 6]), dim=dim), x.flip(dim))


def test_reversal_of_frames_padded_past_the_steps_keeps_the_extra_frames_in_place():
    assert reversal_index(None, 3, "cpu", frames=5).tolist() == [2, 1, 0, 3, 4]
    assert reversal_index(torch.tensor([3, 2]), 3, "cpu", frames=5).tolist() == [[2, 1, 0, 3, 4], [1, 0, 2, 3, 4]]


# Forward passes -----------------------------------------------------------------------------


def test_mamba_forward_chunk_over_pieces_equals_forward():
    torch.manual_seed(0)
    mixer = Mamba(D_MODEL, chunk_size=8, **MIXER_KWARGS)
    x = torch.randn(2, 45, D_MODEL)
    whole = mixer(x)
    pieces, state, start = [], None, 0
    for size in (1, 5, 8, 3, 17, 1, 10):
        y, state = mixer.forward_chunk(x[:, start : start + size], state)
        pieces.append(y)
        start += size
    assert start == x.shape[1]
    assert state.conv.shape == (2, 128, 3) and state.ssm.shape == (2, 128, 16)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True])
def test_one_frame_step_equals_the_scan_of_that_frame(int8):
    """forward_chunk of one frame takes the single-step ops (step); more frames take ssm. On
    one frame both give the same numbers, with float layers and with every linear layer int8 as
    ESPnet's --quantize_asr_model makes them (dt_proj without a weight tensor)."""
    from espnet2.torch_utils.quantization import quantize_dynamic

    torch.manual_seed(0)
    mixer = Mamba(D_MODEL, **MIXER_KWARGS).eval()
    if int8:
        mixer = quantize_dynamic(mixer, qconfig_spec={torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(2, 4, D_MODEL)
    with torch.no_grad():
        _, state = mixer.forward_chunk(x[:, :3], None)
        stepped, stepped_state = mixer.forward_chunk(x[:, 3:], state)
        u, z = mixer.project_in(x[:, 3:]).chunk(2, dim=1)
        scanned, scanned_state = mixer.ssm(u, z, "", state)
    torch.testing.assert_close(stepped, mixer.out_proj(scanned.transpose(1, 2)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stepped_state.conv, scanned_state.conv, rtol=0, atol=0)
    torch.testing.assert_close(stepped_state.ssm, scanned_state.ssm, rtol=1e-5, atol=1e-6)


def test_mamba_is_causal():
    torch.manual_seed(0)
    mixer = Mamba(D_MODEL, **MIXER_KWARGS)
    x = torch.randn(1, 30, D_MODEL)
    changed = x.clone()
    changed[:, 20:] = torch.randn(1, 10, D_MODEL)
    y, y_changed = mixer(x), mixer(changed)
    assert torch.equal(y[:, :20], y_changed[:, :20])
    assert not torch.allclose(y[:, 20:], y_changed[:, 20:])


@pytest.mark.parametrize("make", [lambda: ExtBiMamba(D_MODEL, **MIXER_KWARGS),
                                  lambda: ExtBiMamba(D_MODEL, combine="concat", **MIXER_KWARGS),
                                  lambda: InnBiMamba(D_MODEL, **MIXER_KWARGS)],
                         ids=["extbimamba_sum", "extbimamba_concat", "innbimamba"])  # fmt: skip
def test_bidirectional_mixers_ignore_padding_and_see_both_ways(make):
    torch.manual_seed(0)
    mixer = make()
    short = torch.randn(1, 12, D_MODEL)
    padded_short = torch.cat([short, 100 * torch.randn(1, 8, D_MODEL)], dim=1)  # loud padding
    batch = torch.cat([padded_short, torch.randn(1, 20, D_MODEL)])
    alone = mixer(short, torch.tensor([12]))
    padded = mixer(batch, torch.tensor([12, 20]))
    torch.testing.assert_close(padded[:1, :12], alone, rtol=1e-5, atol=1e-5)
    # full-length lengths and no lengths agree
    torch.testing.assert_close(mixer(batch[1:], torch.tensor([20])), mixer(batch[1:]), rtol=0, atol=0)
    # the last frame changes the first: the mixer looks ahead
    changed = short.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(mixer(changed, torch.tensor([12]))[:, 0], alone[:, 0])
