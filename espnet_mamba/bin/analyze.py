"""Layer-wise analyses of a Mamba-HuBERT model: phone purity of k-means units, PWCCA with
phone / speaker / word labels, MINE mutual information with the local input; and a plot
comparing the tables of several models.

    python -m espnet_mamba.bin.analyze purity --wav_scp data/dev/wav.scp \\
        --phone_alignments ali/phones.ctm --checkpoint exp/ssl/model.pth --output_dir exp/analysis
    python -m espnet_mamba.bin.analyze mine --selftest

See docs/analysis.md.
"""

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from espnet_mamba.analysis import cca, mine, purity, report
from espnet_mamba.analysis.alignments import normalize_phone, read_alignments
from espnet_mamba.analysis.corpus import alignment_labeler, collect_frames, speaker_labeler, utterance_features
from espnet_mamba.analysis.data import read_utt2spk, read_wav_scp, select_utterances
from espnet_mamba.analysis.features import INPUT_FEATURES
from espnet_mamba.bin.options import parse_override
from espnet_mamba.config import list_presets

logger = logging.getLogger("espnet_mamba.analyze")

SELFTEST_DIM, SELFTEST_RHOS, SELFTEST_SAMPLES, SELFTEST_STEPS = 5, (0.5, 0.8, 0.9), 5000, 600


# Model and data ------------------------------------------------------------------------------


def load_model(args):
    """The model of --checkpoint or --preset (random weights, seeded by --seed), in eval mode."""
    overrides = dict(args.override)
    if args.checkpoint:
        from espnet_mamba.espnet.checkpoint import load_pretrained

        model = load_pretrained(args.checkpoint, **overrides)
    else:
        import espnet_mamba

        torch.manual_seed(args.seed)
        model = espnet_mamba.build_model(args.preset, **overrides)
    return model.to(args.device).eval()


def model_name(args) -> str:
    return args.name or (Path(args.checkpoint).stem if args.checkpoint else args.preset)


def check_model_args(parser, args):
    if bool(args.checkpoint) == bool(args.preset):
        parser.error("give exactly one of --checkpoint and --preset")


def output_dir(args) -> Path:
    path = Path(args.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def phone_labeler(args, alignment):
    gap = args.gap_label or None
    return alignment_labeler(alignment, gap, normalize_phone if args.normalize_phones else None)


# Subcommands -----------------------------------------------------------------------------------


def write_results(args, name: str, columns: dict, panels: dict, title: str, log_y: bool = False) -> None:
    """``name``.tsv (one column per measure, a row per layer) and ``name``.png in --output_dir."""
    out = output_dir(args)
    report.write_layer_table(out / f"{name}.tsv", columns)
    report.plot_layers(panels, out / f"{name}.png", title, log_y=log_y)
    print(f"wrote {out / f'{name}.tsv'} and {out / f'{name}.png'}")


def run_purity(args):
    wav_paths = read_wav_scp(args.wav_scp)
    phones = read_alignments(args.phone_alignments, args.phone_tier)
    utts = select_utterances(wav_paths, [phones], args.max_utts)
    frames = collect_frames(load_model(args), wav_paths, utts, {"phone": phone_labeler(args, phones)}, args.device)
    results = purity.layerwise_purity(
        frames.layers, frames.labels["phone"], args.n_clusters, args.seed, mask=frames.labelled("phone")
    )
    columns = {metric: [getattr(r, metric) for r in results] for metric in purity.METRICS}
    title = f"{model_name(args)}: k-means {args.n_clusters} units, {len(utts)} utterances"
    write_results(args, "purity", columns, {"k-means units against phones": columns}, title)


def run_cca(args):
    wav_paths = read_wav_scp(args.wav_scp)
    labelers, tables = {}, []
    if args.phone_alignments:
        phones = read_alignments(args.phone_alignments, args.phone_tier)
        labelers["phone"], tables = phone_labeler(args, phones), tables + [phones]
    if args.word_alignments:
        words = read_alignments(args.word_alignments, args.word_tier)
        labelers["word"], tables = alignment_labeler(words), tables + [words]
    if args.utt2spk:
        utt2spk = read_utt2spk(args.utt2spk)
        labelers["speaker"], tables = speaker_labeler(utt2spk), tables + [utt2spk]
    utts = select_utterances(wav_paths, tables, args.max_utts)
    frames = collect_frames(load_model(args), wav_paths, utts, labelers, args.device)
    max_classes = {"word": args.max_words}
    columns = {}
    for kind in labelers:
        mask = frames.labelled(kind, max_classes.get(kind))
        if len(np.unique(frames.labels[kind][mask])) < 2:
            raise ValueError(f"{kind} labels: fewer than 2 distinct labels over the frames, nothing to correlate")
        columns[kind] = cca.layerwise_pwcca(frames.layers, frames.labels[kind], mask, args.max_frames, args.seed)
    title = f"{model_name(args)}: {len(utts)} utterances"
    write_results(args, "cca", columns, {"PWCCA with labels": columns}, title)


def run_mine_selftest(args):
    config = mine_config(args, steps=SELFTEST_STEPS)
    print(f"MINE on {SELFTEST_SAMPLES} samples of correlated Gaussians, dim {SELFTEST_DIM}, {config.steps} steps")
    print(f"{'rho':>5} {'estimate':>9} {'exact':>7} {'error':>7}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the network is tiny: more CPU threads only add overhead
    try:
        for rho in SELFTEST_RHOS:
            estimate, exact = mine.gaussian_check(SELFTEST_DIM, rho, SELFTEST_SAMPLES, config)
            print(f"{rho:5.2f} {estimate:9.3f} {exact:7.3f} {(estimate - exact) / exact:+7.1%}")
    finally:
        torch.set_num_threads(threads)


def mine_config(args, steps=None) -> mine.MineConfig:
    return mine.MineConfig(
        hidden=args.hidden, steps=steps or args.steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, device=args.device,
    )  # fmt: skip


def run_mine(args):
    wav_paths = read_wav_scp(args.wav_scp)
    utts = select_utterances(wav_paths, [], args.max_utts)
    utterances = utterance_features(load_model(args), wav_paths, utts, args.input_features, args.device)
    estimates = mine.corpus_mine(utterances, mine_config(args))
    columns = {"mi_nats": estimates.mean(0).tolist(), "mi_std": estimates.std(0).tolist()}
    title = f"{model_name(args)}: I({args.input_features}; layer), {len(utts)} utterances"
    write_results(args, "mine", columns, {"MI (nats)": {model_name(args): columns["mi_nats"]}}, title, log_y=True)


def run_compare(args):
    tables = {}
    for item in args.table:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--table takes NAME=PATH, got {item!r}")
        tables[name] = report.read_layer_table(path)
    measures = args.measures or list(next(iter(tables.values())))
    report.plot_layers(report.compare_tables(tables, measures), args.output, args.title, args.log_y)
    print(f"wrote {args.output}")


# Arguments -------------------------------------------------------------------------------------


def add_model_args(p):
    p.add_argument(
        "--checkpoint", help="trained model: packed ESPnet zip, ESPnet .pth with config.yaml, or our own file"
    )
    p.add_argument("--preset", choices=list_presets(), help="a randomly initialised preset instead (smoke tests)")
    p.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help="model config field override, repeatable, e.g. --override d_model=64")  # fmt: skip
    p.add_argument("--name", help="model name in plot titles (default: checkpoint file name or preset)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_data_args(p, alignments: bool):
    p.add_argument("--wav_scp", help="Kaldi wav.scp of 16 kHz mono audio files")
    p.add_argument("--output_dir", help="where the TSV table and PNG plot go")
    p.add_argument("--max_utts", type=int, help="use at most this many utterances (in wav.scp order)")
    p.add_argument("--seed", type=int, default=0)
    if alignments:
        p.add_argument("--phone_alignments", help="phone CTM file, or folder of TextGrids")
        p.add_argument("--phone_tier", default="phones", help="TextGrid tier of the phones")
        p.add_argument("--normalize_phones", action="store_true",
                       help="strip Kaldi position suffixes and stress digits (AH0_B -> AH)")  # fmt: skip
        p.add_argument("--gap_label", default="sil",
                       help="phone label of frames no phone segment covers; '' leaves them out")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("purity", help="phone purity, cluster purity and PNMI of k-means units per layer")
    add_data_args(p, alignments=True)
    add_model_args(p)
    p.add_argument("--n_clusters", type=int, default=100, help="k-means clusters per layer")

    p = sub.add_parser("cca", help="PWCCA of each layer with phone, word and speaker labels")
    add_data_args(p, alignments=True)
    add_model_args(p)
    p.add_argument("--word_alignments", help="word CTM file, or folder of TextGrids")
    p.add_argument("--word_tier", default="words", help="TextGrid tier of the words")
    p.add_argument("--utt2spk", help="Kaldi utt2spk for speaker labels")
    p.add_argument("--max_words", type=int, default=500, help="keep the frames of the most frequent words only")
    p.add_argument("--max_frames", type=int, default=100000, help="random subset of frames per label kind")

    p = sub.add_parser("mine", help="MINE estimate of I(input features; layer) per layer, averaged over utterances")
    add_data_args(p, alignments=False)
    add_model_args(p)
    p.add_argument("--selftest", action="store_true", help="check MINE on correlated Gaussians and exit")
    p.add_argument("--input_features", choices=INPUT_FEATURES, default="mfcc", help="X: 39-d MFCC or the CNN output")
    p.add_argument("--steps", type=int, default=mine.MineConfig.steps, help="training steps per utterance and layer")
    p.add_argument("--hidden", type=int, default=mine.MineConfig.hidden, help="statistics network width")
    p.add_argument("--batch_size", type=int, default=mine.MineConfig.batch_size, help="frames per step")
    p.add_argument("--lr", type=float, default=mine.MineConfig.lr)

    p = sub.add_parser("compare", help="plot the tables of several models side by side")
    p.add_argument("--table", action="append", required=True, metavar="NAME=PATH", help="a model's TSV, repeatable")
    p.add_argument("--output", required=True, help="PNG file")
    p.add_argument("--measures", nargs="+", help="columns to plot (default: all of the first table)")
    p.add_argument("--title", default="")
    p.add_argument("--log_y", action="store_true", help="logarithmic value axis (MINE)")
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "mine" and args.selftest:
        return run_mine_selftest(args)
    if args.command != "compare":
        check_model_args(parser, args)
        if not args.wav_scp or not args.output_dir:
            parser.error("--wav_scp and --output_dir are required")
    if args.command == "purity" and not args.phone_alignments:
        parser.error("purity needs --phone_alignments")
    if args.command == "cca" and not (args.phone_alignments or args.word_alignments or args.utt2spk):
        parser.error("cca needs at least one of --phone_alignments, --word_alignments, --utt2spk")
    try:
        {"purity": run_purity, "cca": run_cca, "mine": run_mine, "compare": run_compare}[args.command](args)
    except ValueError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
