"""Our span masking against ESPnet's ``Masking`` util: the same masks for the same seed, the
same outputs, and ESPnet's own util for configurations ours does not cover."""

import pytest
import torch
from espnet2.legacy.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.ssl.utils.mask import Masking, _compute_mask_indices

from espnet_mamba.espnet.masking import apply_masking, covers, span_mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lengths", [None, [749, 749, 749], [749, 500, 23], [60, 749, 311]])
@pytest.mark.parametrize("mask_prob,mask_length", [(0.8, 10), (0.65, 5), (0.3, 1)])
def test_span_mask_is_espnets_mask_for_the_same_seed(seed, lengths, mask_prob, mask_length):
    frames = 749
    lengths = None if lengths is None else torch.tensor(lengths)
    padding = None if lengths is None else make_pad_mask(lengths, maxlen=frames)
    torch.manual_seed(seed)
    ours = span_mask(3, frames, lengths, mask_prob, mask_length)
    torch.manual_seed(seed)
    espnet = _compute_mask_indices((3, frames), padding, "cpu", mask_prob, mask_length, min_masks=2)
    assert ours.dtype == torch.bool and ours.shape == (3, frames)
    assert torch.equal(ours, espnet)
    counts = ours.sum(1)
    assert bool((counts == counts[0]).all()) and int(counts[0]) > 0  # equal counts, as in HuBERT
    if lengths is not None:
        assert not bool((ours & padding).any())  # padding is never masked


def test_apply_masking_gives_espnets_output():
    masking = Masking(encoder_embed_dim=16, mask_prob=0.8, mask_length=4)
    assert covers(masking)
    x = torch.randn(2, 50, 16, requires_grad=True)
    lengths = torch.tensor([50, 37])
    padding = make_pad_mask(lengths)
    torch.manual_seed(3)
    ours, info = apply_masking(masking, x, lengths)
    torch.manual_seed(3)
    espnet, espnet_info = masking(x.detach().clone(), padding)
    assert torch.equal(ours, espnet)
    assert torch.equal(info["mask_m"], espnet_info["mask_m"]) and torch.equal(info["mask_u"], ~info["mask_m"])
    assert torch.equal(ours[info["mask_m"]], masking.mask_embedding.expand(int(info["mask_m"].sum()), 16))
    assert torch.equal(ours[info["mask_u"]], x[info["mask_u"]])
    ours.sum().backward()  # x keeps its gradient (ESPnet writes into x in place)
    assert torch.equal(x.grad, info["mask_u"][..., None].float().expand_as(x))


@pytest.mark.parametrize("setting", [dict(no_mask_overlap=True), dict(mask_selection="uniform", mask_other=2),
                                     dict(mask_channel_prob=0.5, mask_channel_length=4)])
def test_other_configurations_use_espnets_util(setting):
    masking = Masking(encoder_embed_dim=16, mask_prob=0.8, mask_length=4, **setting)
    assert not covers(masking)
    x = torch.randn(2, 50, 16)
    lengths = torch.tensor([50, 37])
    padding = make_pad_mask(lengths)
    torch.manual_seed(5)
    ours, info = apply_masking(masking, x.clone(), lengths)
    torch.manual_seed(5)
    espnet, espnet_info = masking(x.clone(), padding)
    assert torch.equal(ours, espnet) and torch.equal(info["mask_m"], espnet_info["mask_m"])
