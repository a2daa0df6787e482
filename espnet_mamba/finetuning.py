"""The ASR training config that fine-tunes a pretrained Mamba-HuBERT.

A fine-tuning config must rebuild the pretrained backbone without the pretrained file (a packed
ASR model is used alone), so the SSL model's ``encoder_conf`` (preset + ModelConfig overrides)
goes into the ASR config, and the weights come in once, at the start of training, through
ESPnet's ``init_param: <ssl .pth>:encoder:encoder`` (SSL ``encoder.*`` -> ASR ``encoder.*``).

From the ASR base config the encoder keeps its fine-tuning options (``freeze_cnn``,
``freeze_encoder_steps``) and the fields that do not change shapes (dropout, ops); any shape
field it sets must agree with the pretrained model.
"""

from pathlib import Path
from typing import Tuple, Union

import yaml

from espnet_mamba.atomic_write import write_atomically
from espnet_mamba.config import load_config
from espnet_mamba.espnet.checkpoint import BEST_MODEL_FILES, ENCODER_NAME

FINETUNE_KEYS = ("freeze_cnn", "freeze_encoder_steps")
# ModelConfig fields that leave the parameters as they are: an ASR config may set its own
SHAPE_FREE_FIELDS = ("dropout", "attention_dropout", "dropout_input", "dither", "ssm_impl", "scan_chunk_size",
                     "recompute_cnn", "recompute_blocks", "compile_cnn")


def locate_ssl_model(pretrained: Union[str, Path], unpack_dir: Union[str, Path]) -> Tuple[Path, Path]:
    """(config.yaml, model .pth) of an SSL model: a packed zip (``espnet2.bin.pack ssl``,
    unpacked into ``unpack_dir``), an experiment directory, or a .pth with config.yaml beside it."""
    from espnet2.main_funcs.pack_funcs import unpack

    pretrained = Path(pretrained)
    if not pretrained.exists():
        raise FileNotFoundError(f"no pretrained model at {pretrained}")
    if pretrained.suffix == ".zip":
        files = unpack(pretrained, unpack_dir)
        if "ssl_model_file" not in files:
            raise ValueError(f"{pretrained} is not a packed SSL model (made by espnet2.bin.pack ssl)")
        return Path(files["ssl_train_config"]), Path(files["ssl_model_file"])
    if pretrained.is_dir():
        found = [pretrained / n for n in BEST_MODEL_FILES if (pretrained / n).exists()]
        if not found:
            raise FileNotFoundError(f"no model file ({', '.join(BEST_MODEL_FILES)}) in {pretrained}")
        pretrained = found[0]
    config = pretrained.parent / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"no config.yaml beside {pretrained}")
    return config, pretrained


def _model_fields(encoder_conf: dict) -> dict:
    return {k: v for k, v in encoder_conf.items() if k not in FINETUNE_KEYS and k != "pretrained"}


def finetune_config(asr_config: dict, ssl_config: dict, ssl_model_file: Union[str, Path]) -> dict:
    """``asr_config`` with the SSL model's encoder and ``init_param`` from ``ssl_model_file``."""
    for name, config in (("ASR", asr_config), ("pretrained", ssl_config)):
        if config.get("encoder") != ENCODER_NAME:
            raise ValueError(f"the {name} config has encoder {config.get('encoder')!r}, not {ENCODER_NAME}")
    ssl_fields = _model_fields(ssl_config.get("encoder_conf") or {})
    if ssl_config["encoder_conf"].get("pretrained"):
        raise ValueError("the pretrained config names another checkpoint (encoder_conf.pretrained); "
                         "fine-tune from that one")
    asr_conf = asr_config.get("encoder_conf") or {}
    asr_preset, ssl_preset = asr_conf.get("preset", "mamba_base"), ssl_fields.get("preset", "mamba_base")
    if asr_preset != ssl_preset:
        raise ValueError(f"the ASR config is for preset {asr_preset} but the pretrained model is {ssl_preset}")
    pretrained_cfg = load_config(**ssl_fields).to_dict()
    for key, value in _model_fields(asr_conf).items():
        if key in SHAPE_FREE_FIELDS or key == "preset":
            continue
        if key not in pretrained_cfg:
            raise ValueError(f"encoder_conf.{key} is not a ModelConfig field")
        if load_config(ssl_preset, **{key: value}).to_dict()[key] != pretrained_cfg[key]:
            raise ValueError(
                f"encoder_conf.{key} = {value!r} in the ASR config, but the pretrained model has "
                f"{pretrained_cfg[key]!r}; remove it from the ASR config"
            )
    encoder_conf = dict(ssl_fields)
    encoder_conf.update({k: v for k, v in asr_conf.items() if k in SHAPE_FREE_FIELDS or k in FINETUNE_KEYS})
    return {
        **asr_config,
        "encoder_conf": encoder_conf,
        "init_param": [f"{Path(ssl_model_file).resolve()}:encoder:encoder"],
    }


def write_finetune_config(asr_config_path, pretrained, out_path, unpack_dir) -> Path:
    """Read the ASR base config and the pretrained model, write the fine-tuning config."""
    ssl_config_path, ssl_model_file = locate_ssl_model(pretrained, unpack_dir)
    asr_config = yaml.safe_load(Path(asr_config_path).read_text()) or {}
    ssl_config = yaml.safe_load(Path(ssl_config_path).read_text()) or {}
    config = finetune_config(asr_config, ssl_config, ssl_model_file)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Fine-tuning config written by espnet_mamba.bin.finetune_config from\n"
        f"# {asr_config_path} and {pretrained}\n"
    )
    # whole or not at all: the recipe takes an existing config as the finished stage
    write_atomically(out_path, lambda tmp: tmp.write_text(header + yaml.safe_dump(config, sort_keys=False)))
    return out_path
