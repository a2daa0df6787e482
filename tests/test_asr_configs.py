"""Every ASR config of the recipes passes ESPnet's check without data: a ``--dry_run`` of our
ASR task parses it and builds the full-size model, optimizer and scheduler (a few seconds
each). Decoding configs parse with the tools that read them."""

from pathlib import Path

import pytest
import torch
import yaml

import espnet_mamba
from espnet_mamba.espnet.checkpoint import save_pretrained
from espnet_mamba.espnet.tasks import MambaASRTask

from conftest import TINY_CNN

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted(REPO.glob("egs2/*/asr1/conf/**/train_*.yaml"))
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "<sos/eos>"]


def config_id(path: Path) -> str:
    return str(path.relative_to(REPO / "egs2"))


@pytest.fixture(scope="module")
def token_list(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text("".join(t + "\n" for t in TOKENS))
    return path


@pytest.fixture(scope="module")
def upstream_checkpoints(tmp_path_factory):
    """Tiny s3prl upstream checkpoints (1 block, small CNN) with the base and small widths."""
    root = tmp_path_factory.mktemp("upstream")
    paths = {}
    for size, preset in (("base", "mamba_base"), ("small", "mamba_small")):
        torch.manual_seed(0)
        model = espnet_mamba.build_model(preset, num_layers=1, conv_layers=TINY_CNN, ssm_impl="torch")
        paths[size] = root / f"{size}.pt"
        save_pretrained(model, paths[size])
    return paths


def test_every_preset_has_a_ctc_config():
    tuning = REPO / "egs2/librispeech_100/asr1/conf/tuning"
    ctc = {p.stem.removeprefix("train_asr_ctc_") for p in tuning.glob("train_asr_ctc_*.yaml")}
    assert ctc == set(espnet_mamba.list_presets())
    conformer = {p.stem for p in tuning.glob("train_asr_conformer_*.yaml")}
    assert conformer == {"train_asr_conformer_frozen_base", "train_asr_conformer_frozen_small"}


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=config_id)
def test_config_passes_espnet_dry_run(config, token_list, upstream_checkpoints, tmp_path):
    conf = yaml.safe_load(config.read_text())
    extra = []
    if conf.get("frontend") == "s3prl":
        assert conf["frontend_conf"]["frontend_conf"]["upstream"] == "mamba_hubert"
        size = "base" if conf["preencoder_conf"]["input_size"] == 768 else "small"
        extra = ["--frontend_conf", f"frontend_conf.path_or_url={upstream_checkpoints[size]}",
                 "--frontend_conf", f"download_dir={tmp_path / 'hub'}"]  # fmt: skip
        assert conf["model_conf"]["ctc_weight"] == 0.3 and conf["encoder_conf"]["num_blocks"] == 12
    else:
        assert conf["encoder"] == "mamba_hubert" and conf["model_conf"]["ctc_weight"] == 1.0
        if "espeak_commands" in str(config):  # trained from scratch: every part learns from the first step
            assert not conf["encoder_conf"].get("freeze_cnn") and not conf["encoder_conf"].get("freeze_encoder_steps")
        else:  # fine-tuning a pretrained model
            assert conf["encoder_conf"]["freeze_cnn"] is True and conf["encoder_conf"]["freeze_encoder_steps"] > 0
            assert conf["unused_parameters"] is True  # DDP: the frozen backbone's parameters get no gradient
            preset = conf["encoder_conf"]["preset"]
            assert config.stem.endswith(preset) or "mini_an4" in str(config)
    out = tmp_path / "exp"
    MambaASRTask.main(cmd=[
        "--config", str(config), "--dry_run", "true", "--iterator_type", "none", "--output_dir", str(out),
        "--token_list", str(token_list), "--token_type", "char", *extra,
    ])  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["encoder"] == conf["encoder"] and written["token_list"] == TOKENS


@pytest.mark.parametrize("config", sorted(REPO.glob("egs2/*/asr1/conf/decode_*.yaml")), ids=config_id)
def test_decoding_config_parses(config, tmp_path):
    conf = yaml.safe_load(config.read_text())
    if "chunk_ms" in conf or "decoder" in conf:  # espnet_mamba.bin.asr_stream options
        from espnet_mamba.bin.asr_stream import parse_args

        args = parse_args(["--config", str(config), "--output_dir", str(tmp_path)])
        assert args.decoder == conf["decoder"]
    else:  # ESPnet's asr_inference options
        from espnet2.bin.asr_inference import get_parser

        args = get_parser().parse_args([
            "--config", str(config), "--output_dir", str(tmp_path), "--asr_train_config", "c.yaml",
            "--data_path_and_name_and_type", "wav.scp,speech,sound",
        ])  # fmt: skip
        assert args.ctc_weight == conf["ctc_weight"]
