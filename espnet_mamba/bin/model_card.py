"""Write the model card (README.md) packed with a pretrained or fine-tuned model.

    python -m espnet_mamba.bin.model_card --exp_dir exp/ssl_iter1 --model_file exp/ssl_iter1/valid.loss.best.pth \
        [--kmeans km0.joblib km1.joblib] [--results RESULTS.md] --out exp/ssl_iter1/README.md
"""

import argparse
from pathlib import Path

import yaml

from espnet_mamba.espnet.checkpoint import ENCODER_NAME, load_pretrained


def model_card(exp_dir: Path, model_file: Path, kmeans, feature_layer, results) -> str:
    config = yaml.safe_load((exp_dir / "config.yaml").read_text())
    task = "asr" if "ctc_conf" in config else "ssl"
    model, downstream = _mamba_hubert_of(config, model_file, exp_dir)
    backbone = model.cfg
    count = sum(p.numel() for p in model.backbone.parameters())
    lines = [
        "---",
        "tags: [espnet, espnet-mamba, audio, self-supervised-learning, mamba]",
        "license: apache-2.0",
        "---",
        f"# Mamba-HuBERT ({task}): {exp_dir.name}",
        "",
        f"Backbone: `{backbone.layer_type}`, {backbone.num_layers} blocks, d_model {backbone.d_model}, "
        f"{'causal' if backbone.causal else 'bidirectional'}, {count / 1e6:.2f}M parameters.",
        "",
    ]
    if downstream is None:
        lines += [
            "Load it with `espnet_mamba.espnet.checkpoint.load_pretrained(<this zip>)`, as the s3prl",
            "upstream `mamba_hubert` (`import s3prl_upstream`), or with ESPnet after",
            "`import espnet_mamba.espnet.tasks`.",
        ]
    else:
        lines += [
            f"The backbone is a frozen s3prl upstream (`mamba_hubert`, packed beside the model) under ESPnet's "
            f"`{downstream}` encoder.",
            "Load it with ESPnet after `import espnet_mamba.espnet.tasks`, which registers the upstream.",
        ]
    lines += [
        "",
        "## Training",
        f"- epochs: {config.get('max_epoch')}, optimizer: {config.get('optim')} {config.get('optim_conf')}",
        f"- train data: {[p[0] for p in config.get('train_data_path_and_name_and_type', [])]}",
    ]
    if kmeans:
        lines.append(f"- k-means targets: {', '.join(Path(k).name for k in kmeans)}; "
                     f"iteration-1 features from hidden state {feature_layer}")
    if results:
        lines += ["", "## Results", "", Path(results).read_text()]
    lines += ["", "## Configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def _mamba_hubert_of(config: dict, model_file: Path, exp_dir: Path):
    """The Mamba-HuBERT model of an experiment, and the name of the encoder on top of it (None
    where Mamba-HuBERT is the encoder): the model's own encoder, or its frozen s3prl upstream."""
    if config.get("encoder") == ENCODER_NAME:
        return load_pretrained(model_file), None
    upstream = (config.get("frontend_conf") or {}).get("frontend_conf") or {}
    if config.get("frontend") == "s3prl" and upstream.get("upstream") == ENCODER_NAME:  # the s3prl upstream's name too
        return load_pretrained(upstream["path_or_url"]), config.get("encoder")
    raise ValueError(f"{exp_dir / 'config.yaml'} holds no Mamba-HuBERT: encoder {config.get('encoder')!r}, "
                     f"frontend {config.get('frontend')!r}")


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp_dir", required=True, type=Path)
    parser.add_argument("--model_file", required=True, type=Path)
    parser.add_argument("--kmeans", nargs="*", default=[])
    parser.add_argument("--feature_layer", type=int, default=None)
    parser.add_argument("--results", default=None)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(cmd)
    args.out.write_text(model_card(args.exp_dir, args.model_file, args.kmeans, args.feature_layer, args.results))


if __name__ == "__main__":
    main()
