"""HuBERT pseudo-labels: dump features, fit k-means, write and check label files.

    python -m espnet_mamba.bin.kmeans dump  --wav_scp data/train/wav.scp --kind mfcc --out_dir dump/feats_iter0
    python -m espnet_mamba.bin.kmeans fit   --feats_dir dump/feats_iter0 --n_clusters 100 --out exp/km_iter0.joblib
    python -m espnet_mamba.bin.kmeans label --wav_scp data/train/wav.scp --kind mfcc --km exp/km_iter0.joblib --out dump/labels_iter0/train/text
    python -m espnet_mamba.bin.kmeans check --wav_scp data/train/wav.scp --labels dump/labels_iter0/train/text --n_clusters 100

``--kind layer --checkpoint CKPT --layer 6`` uses hidden state 6 of a pretrained model instead.
"""

import argparse
import logging
from pathlib import Path

import torch

from espnet_mamba import kmeans


def _add_feature_args(parser):
    parser.add_argument("--wav_scp", required=True)
    parser.add_argument("--kind", choices=("mfcc", "layer"), default="mfcc")
    parser.add_argument("--checkpoint", help="model for --kind layer (packed zip, ESPnet .pth, ...)")
    parser.add_argument("--layer", type=int, default=6, help="hidden state index (0 = input to block 1)")
    parser.add_argument("--device", default="cpu")


def _settings(args, *files) -> str:
    """What the features (and labels) are made from, for the resume of a killed dump or label run:
    the kind, the layer and the files, each with its size and modification time."""
    parts = [f"kind={args.kind}"]
    if args.kind == "layer":
        parts.append(f"layer={args.layer}")
        files = (args.checkpoint, *files)
    for name in files:
        stat = Path(name).stat()
        parts.append(f"{Path(name).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return " ".join(parts)


def _features(args):
    model = None
    if args.kind == "layer":
        from espnet_mamba.espnet.checkpoint import load_pretrained

        if not args.checkpoint:
            raise SystemExit("--kind layer needs --checkpoint")
        model = load_pretrained(args.checkpoint).eval().to(args.device)
    return kmeans.feature_function(args.kind, model, args.layer)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dump = sub.add_parser("dump", help="features of (a portion of) the utterances for fitting")
    _add_feature_args(dump)
    dump.add_argument("--out_dir", required=True)
    dump.add_argument("--portion", type=float, default=1.0)
    fit = sub.add_parser("fit", help="fit k-means on dumped features")
    fit.add_argument("--feats_dir", required=True)
    fit.add_argument("--n_clusters", type=int, required=True)
    fit.add_argument("--out", required=True)
    fit.add_argument("--seed", type=int, default=0)
    label = sub.add_parser("label", help="write 50 Hz cluster labels for every utterance")
    _add_feature_args(label)
    label.add_argument("--km", required=True)
    label.add_argument("--out", required=True)
    check = sub.add_parser("check", help="verify a label file against the audio")
    check.add_argument("--wav_scp", required=True)
    check.add_argument("--labels", required=True)
    check.add_argument("--n_clusters", type=int, required=True)
    return parser


def main(cmd=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args(cmd)
    torch.set_grad_enabled(False)
    if args.command == "dump":
        features, _ = _features(args)
        n = kmeans.dump_features(args.wav_scp, features, args.out_dir, args.portion, settings=_settings(args))
        logging.info("dumped %d frames to %s", n, args.out_dir)
    elif args.command == "fit":
        km = kmeans.fit_kmeans(kmeans.load_features(args.feats_dir), args.n_clusters, args.seed)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        kmeans.write_token_list(args.n_clusters, Path(args.out).parent / "tokens.txt")
        kmeans.save_kmeans(km, args.out)  # last: the recipe takes it as the sign that the fit is done
        logging.info("k-means with %d clusters, inertia %.4g -> %s", args.n_clusters, km.inertia_, args.out)
    elif args.command == "label":
        features, downsample = _features(args)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        kmeans.write_labels(args.wav_scp, features, downsample, kmeans.load_kmeans(args.km), args.out,
                            settings=_settings(args, args.km))
    elif args.command == "check":
        n = kmeans.check_labels(args.wav_scp, args.labels, args.n_clusters)
        logging.info("%s: labels of %d utterances are consistent", args.labels, n)


if __name__ == "__main__":
    main()
