"""Loading Mamba-HuBERT weights from any of the places they live.

* a packed ESPnet model (zip from ``espnet2.bin.pack ssl|asr``),
* an ESPnet experiment: a ``.pth`` with the ``config.yaml`` of its training beside it (or the
  experiment directory itself), SSL or ASR task,
* a file written by :func:`save_pretrained`.

ESPnet SSL names map to ours: ``encoder.backbone.*`` -> ``backbone.*``,
``util_modules.mask.mask_embedding`` -> ``mask_embedding``, ``losses.0.decoder.*`` -> the
label head. An ASR checkpoint has no head; it keeps its fresh initialisation.
"""

import io
import zipfile
from pathlib import Path
from typing import Dict, Tuple, Union

import torch
import yaml

from espnet_mamba.config import ModelConfig, load_config
from espnet_mamba.model import MambaHuBERTForPretraining

FORMAT = "espnet_mamba"
ENCODER_NAME = "mamba_hubert"
# An experiment's model, in this order of preference (egs2/TEMPLATE/utils/stage_funcs.sh's
# best_model follows it too): ESPnet's links to the best epoch by each criterion, then the last
BEST_MODEL_FILES = ("valid.acc.best.pth", "valid.loss.best.pth", "valid.cer_ctc.best.pth", "latest.pth")
_ESPNET_PREFIXES = (
    ("encoder.backbone.", "backbone."),
    ("util_modules.mask.mask_embedding", "mask_embedding"),
    ("losses.0.decoder.final_proj.", "final_proj."),
    ("losses.0.decoder.label_embeddings.", "label_embeddings."),
)


def save_pretrained(model: MambaHuBERTForPretraining, path: Union[str, Path]) -> None:
    """Write config and weights to one file that :func:`load_pretrained` reads."""
    torch.save({"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": model.state_dict()}, path)


def load_pretrained(path: Union[str, Path], **overrides) -> MambaHuBERTForPretraining:
    """The pretraining model stored at ``path`` (see the module docstring), on CPU.

    ``overrides`` change ModelConfig fields that do not change shapes (dropout, ssm_impl).
    Raises ValueError for a checkpoint of another model, FileNotFoundError if nothing is there.
    """
    config, state, kind = _read(Path(path))
    cfg = config if isinstance(config, ModelConfig) else _config_from_espnet(config, path)
    cfg = ModelConfig(**{**cfg.to_dict(), **overrides})
    model = MambaHuBERTForPretraining(cfg)
    if kind == FORMAT:
        model.load_state_dict(state)
        return model
    mapped = _map_espnet_state(state)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing_backbone = [k for k in missing if k.startswith("backbone.")]
    if missing_backbone or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the configured model (missing {missing_backbone[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    return model


def _read(path: Path) -> Tuple[Union[ModelConfig, dict], Dict[str, torch.Tensor], str]:
    """(config, state dict, "espnet_mamba" or "espnet") from a file, zip or directory."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        candidates = [path / n for n in BEST_MODEL_FILES] + sorted(path.glob("*.pth"))
        # checkpoint.pth (ESPnet's) and checkpoint.prev.pth (ResumableTrainer's) hold training state
        found = [p for p in candidates if p.exists() and not p.name.startswith("checkpoint.")]
        if not found:
            raise FileNotFoundError(f"no model .pth in {path}")
        path = found[0]
    if _is_packed(path):
        return _read_packed(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return ModelConfig(**obj["config"]), obj["state_dict"], FORMAT
    if isinstance(obj, dict) and "model" in obj and "optimizers" in obj:  # ESPnet checkpoint.pth
        obj = obj["model"]
    config_path = path.parent / "config.yaml"
    if not config_path.exists():
        raise ValueError(
            f"{path} is not an espnet_mamba checkpoint and has no ESPnet config.yaml beside it"
        )
    return yaml.safe_load(config_path.read_text()), obj, "espnet"


def _is_packed(path: Path) -> bool:
    """A zip with a meta.yaml (torch.save files are zips too, without one)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("meta.yaml") for n in archive.namelist())


def _read_packed(path: Path):
    """Config and weights from a zip made by ``espnet2.bin.pack``."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        meta_name = next(n for n in names if n.endswith("meta.yaml"))
        meta = yaml.safe_load(archive.read(meta_name))
        config_file = next(iter(meta["yaml_files"].values()))
        model_file = next(v for k, v in meta["files"].items() if k.endswith("model_file"))

        def member(listed: str) -> str:
            rel = listed.lstrip("/")  # pack() lists files outside its working directory by absolute path
            matches = [n for n in names if n == rel or n.endswith("/" + rel)]
            if not matches:
                raise ValueError(f"{path}: {listed} listed in meta.yaml is missing from the archive")
            return matches[0]

        config = yaml.safe_load(archive.read(member(config_file)))
        state = torch.load(io.BytesIO(archive.read(member(model_file))), map_location="cpu", weights_only=True)
    return config, state, "espnet"


def _config_from_espnet(config: dict, path) -> ModelConfig:
    encoder = config.get("encoder")
    if encoder != ENCODER_NAME:
        raise ValueError(
            f"{path} is a checkpoint of another model (encoder: {encoder!r}); "
            f"expected encoder: {ENCODER_NAME}"
        )
    conf = dict(config.get("encoder_conf") or {})
    pretrained = conf.pop("pretrained", None)
    for key in ("freeze_cnn", "freeze_encoder_steps"):
        conf.pop(key, None)
    preset = conf.pop("preset", "mamba_base")
    if pretrained:  # the model's shape comes from that checkpoint
        if not Path(pretrained).exists():
            raise FileNotFoundError(f"{path}: its encoder_conf.pretrained {pretrained}, which gives the model's shape, "
                                    "does not exist")  # fmt: skip
        base = load_pretrained(pretrained).cfg.to_dict()
        return ModelConfig(**{**base, **conf})
    head = {}
    for loss in config.get("loss") or []:
        if loss.get("name") == "hubert":
            head = {k: loss["conf"][k] for k in ("num_classes", "final_dim") if k in loss.get("conf", {})}
    return load_config(preset, **{**conf, **head})


def _map_espnet_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        for theirs, ours in _ESPNET_PREFIXES:
            if key.startswith(theirs):
                mapped[ours + key[len(theirs) :]] = value
    if not any(k.startswith("backbone.") for k in mapped):
        raise ValueError("checkpoint holds no mamba_hubert encoder weights (encoder.backbone.*)")
    return mapped
