"""int8 linear layers for CPU inference (espnet_mamba.quantization): which layers turn int8,
that the float model is left as it was, and how close the int8 model's features and stream stay."""

import pytest
import torch
import torch.nn as nn
from espnet2.torch_utils.quantization import quantize_dynamic
from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

import espnet_mamba
from espnet_mamba.quantization import float_only_linears, quantize_linear_int8


def _backbone(preset: str) -> espnet_mamba.MambaHuBERT:
    torch.manual_seed(0)
    return espnet_mamba.MambaHuBERT(espnet_mamba.load_config(preset)).eval()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("preset", ["mamba_small", "innbimamba_small", "extbimamba_small", "causal_transformer_small"])
def test_int8_copy_swaps_every_linear_layer_but_the_scans_dt_proj(preset):
    backbone = _backbone(preset)
    linears = {name for name, m in backbone.named_modules() if type(m) is nn.Linear}
    keep = float_only_linears(backbone)
    if preset.startswith("causal_transformer"):
        assert keep == set()
    else:
        directions = 1 + preset.endswith("bimamba_small")  # InnBiMamba's dt_proj_b, ExtBiMamba's second mixer
        assert len(keep) == directions * backbone.cfg.num_layers and all("dt_proj" in n for n in keep)
    quantized = quantize_linear_int8(backbone)
    modules = dict(quantized.named_modules())
    assert all(type(modules[name]) is Int8Linear for name in linears - keep)
    assert all(type(modules[name]) is nn.Linear for name in keep)
    assert all(type(m) is nn.Linear for name, m in backbone.named_modules() if name in linears), "the float model"


@pytest.mark.parametrize("preset", ["mamba_small", "innbimamba_small", "causal_transformer_small"])
def test_int8_features_stay_close_to_the_float_ones(preset):
    backbone = _backbone(preset)
    quantized = quantize_linear_int8(backbone)
    wav = 0.1 * torch.randn(1, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, _ = backbone.extract_features(wav)
        features, _ = quantized.extract_features(wav)
    for layer in (1, len(reference) - 1):
        error = _relative_error(features[layer], reference[layer])
        assert 0 < error < 0.05, (layer, error)  # int8 changes the numbers, a little


@pytest.mark.parametrize("preset", ["mamba_small", "innbimamba_small"])
def test_mixers_run_with_every_linear_layer_int8_as_espnets_option_makes_them(preset):
    backbone = _backbone(preset)
    quantized = quantize_dynamic(backbone, qconfig_spec={nn.Linear}, dtype=torch.qint8)  # dt_proj too
    assert type(quantized.layers[0].mixer.dt_proj) is Int8Linear
    wav = 0.1 * torch.randn(1, 24000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        error = _relative_error(quantized.extract_features(wav)[0][-1], backbone.extract_features(wav)[0][-1])
    assert 0 < error < 0.05


def test_int8_stream_stays_close_to_the_float_offline_features():
    backbone = _backbone("mamba_small")
    quantized = quantize_linear_int8(backbone)
    wav = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = backbone.extract_features(wav)[0][-1]
        state, pieces = quantized.init_stream(1), []
        for start in range(0, wav.shape[1], 3200):
            hidden, state = quantized.stream(wav[:, start : start + 3200], state)
            pieces.append(hidden[-1])
    streamed = torch.cat(pieces, dim=1)
    assert streamed.shape == reference.shape
    assert _relative_error(streamed, reference) < 0.05


def test_a_bare_linear_layer_turns_int8():
    layer = nn.Linear(16, 8)
    quantized = quantize_linear_int8(layer)
    assert type(quantized) is Int8Linear
    x = torch.randn(4, 16)
    assert _relative_error(quantized(x), layer(x)) < 0.05


def test_a_model_off_the_cpu_is_refused():
    with pytest.raises(ValueError, match="CPU only.*meta"):
        quantize_linear_int8(nn.Linear(4, 4, device="meta"))
