"""Write the model card (README.md) packed with a pretrained or fine-tuned model.

    python -m espnet_mamba.bin.model_card --exp_dir exp/ssl_iter1 --model_file exp/ssl_iter1/valid.loss.best.pth \
        [--kmeans km0.joblib km1.joblib] [--results RESULTS.md] --out exp/ssl_iter1/README.md
"""

import argparse
from pathlib import Path

import yaml

from espnet_mamba.espnet.checkpoint import load_pretrained


def model_card(exp_dir: Path, model_file: Path, kmeans, feature_layer, results) -> str:
    config = yaml.safe_load((exp_dir / "config.yaml").read_text())
    task = "asr" if "ctc_conf" in config else "ssl"
    model = load_pretrained(model_file)
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
        "Load it with `espnet_mamba.espnet.checkpoint.load_pretrained(<this zip>)`, as the s3prl",
        "upstream `mamba_hubert` (`import s3prl_upstream`), or with ESPnet after",
        "`import espnet_mamba.espnet.tasks`.",
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
