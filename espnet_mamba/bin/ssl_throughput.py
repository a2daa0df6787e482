"""Pretraining throughput through ESPnet, on a synthetic corpus, for presets side by side.

    python -m espnet_mamba.bin.ssl_throughput --presets mamba_base,transformer_base \
        --ngpu 1 --steps 200 --batch_size 8 --seconds 15 --amp true --work_dir /tmp/tp \
        [--override compile_cnn=true]

For each preset it writes a corpus of ``--seconds``-long utterances (tones in noise) with
random 100-cluster labels, runs iteration-0 style pretraining (``espnet_mamba.bin.ssl_train``,
HuBERT masking and loss) for ``--steps`` steps, and prints a table of seconds of audio
trained per second of wall time: over the whole epoch, and, leaving out the first log interval
with its warm-up and compilation, from ESPnet's per-step timing, with the part of each step
spent waiting for the data loader. It also shows the loss at the start and the end. With
``--ngpu 2`` ESPnet trains with DDP.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import yaml

from espnet_mamba.bin.options import parse_override
from espnet_mamba.espnet.checkpoint import ENCODER_NAME
from espnet_mamba.kmeans import expected_frames, write_token_list
from espnet_mamba.validation import SAMPLE_RATE

N_CLUSTERS = 100


def write_corpus(root: Path, utterances: int, seconds: float, seed: int = 0) -> None:
    """root/{wav.scp, text, speech_shape, tokens.txt} of synthetic audio and labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples = int(seconds * SAMPLE_RATE)
    frames = expected_frames(samples)
    t = np.arange(samples) / SAMPLE_RATE
    scp, text, shape = [], [], []
    for i in range(utterances):
        utt = f"utt{i:05d}"
        freqs = rng.uniform(100, 3000, size=4)
        wav = sum(np.sin(2 * np.pi * f * t) for f in freqs) * 0.1 + 0.05 * rng.standard_normal(samples)
        soundfile.write(root / f"{utt}.wav", wav.astype(np.float32), SAMPLE_RATE)
        scp.append(f"{utt} {root / f'{utt}.wav'}\n")
        text.append(utt + " " + " ".join(map(str, rng.integers(0, N_CLUSTERS, frames))) + "\n")
        shape.append(f"{utt} {samples}\n")
    (root / "wav.scp").write_text("".join(scp))
    (root / "text").write_text("".join(text))
    (root / "speech_shape").write_text("".join(shape))
    write_token_list(N_CLUSTERS, root / "tokens.txt")


def write_config(path: Path, preset: str, batch_size: int, steps: int, amp: bool, overrides=None,
                 num_workers: int = 2) -> None:
    """ESPnet SSL config; ``overrides``: ModelConfig fields for the encoder (e.g. compile_cnn)."""
    config = {
        "encoder": ENCODER_NAME,
        "encoder_conf": {"preset": preset, **(overrides or {})},
        "model": ENCODER_NAME,
        "input_size": 1,
        "normalize": None,
        "preencoder": None,
        "loss": [{"name": "hubert", "conf": {"num_classes": N_CLUSTERS + 1, "final_dim": 256}}],
        "util": [{"name": "mask", "conf": {"mask_prob": 0.8, "mask_length": 10}}],
        "collate_fn_conf": {"label_downsampling": 1, "pad": False, "rand_crop": True},
        "batch_type": "sorted",
        "batch_size": batch_size,
        "num_iters_per_epoch": steps,
        "max_epoch": 1,
        "num_workers": num_workers,
        "optim": "adamw",
        "optim_conf": {"lr": 5e-4, "weight_decay": 0.01},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": max(steps // 10, 1)},
        "use_amp": amp,
        "grad_clip": 10.0,
        "log_interval": max(steps // 10, 1),
        "num_att_plot": 0,
        "use_tensorboard": False,
        "best_model_criterion": [["train", "loss", "min"]],
        "keep_nbest_models": 1,
        "seed": 0,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_training(work: Path, corpus: Path, config: Path, ngpu: int) -> str:
    out = work / "exp"
    cmd = [
        sys.executable, "-m", "espnet_mamba.bin.ssl_train", "--config", str(config), "--ngpu", str(ngpu),
        "--use_preprocessor", "true", "--token_type", "word", "--token_list", str(corpus / "tokens.txt"),
        "--train_data_path_and_name_and_type", f"{corpus / 'wav.scp'},speech,sound",
        "--train_data_path_and_name_and_type", f"{corpus / 'text'},text,text",
        "--valid_data_path_and_name_and_type", f"{corpus / 'wav.scp'},speech,sound",
        "--valid_data_path_and_name_and_type", f"{corpus / 'text'},text,text",
        "--train_shape_file", str(corpus / "speech_shape"), "--valid_shape_file", str(corpus / "speech_shape"),
        "--output_dir", str(out),
    ]  # fmt: skip
    if ngpu > 1:
        cmd += ["--multiprocessing_distributed", "true", "--dist_launcher", "none"]
    log = work / "train.log"
    with open(log, "w") as stream:
        status = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT).returncode
    if status != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"ESPnet's training exited with status {status}; the end of {log}:\n{tail}")
    return log.read_text()


def _interval_means(log: str, key: str) -> list:
    """ESPnet's mean of ``key`` over each log interval ("1epoch:train:11-20batch: ...")."""
    return [float(x) for x in re.findall(rf"\d+-\d+batch: .*?(?<![a-z_]){key}=([\d.e+-]+)", log)]


def summarize(log: str, steps: int, batch_size: int, seconds: float) -> dict:
    """Throughput, per-step times and losses from an ESPnet train.log.

    ESPnet logs, per interval, the mean ``train_time`` of a step (wall time, data loading
    included) and ``iter_time``, the time the step waited for the data loader. The
    ``steady_*`` figures average the intervals after the first, leaving out warm-up.
    """
    # ESPnet writes the epoch's time with humanfriendly: "17.5 seconds", "1 minute and 3.5 seconds",
    # "1 hour, 2 minutes and 5 seconds"; the train part ends at "[valid]" or at the line's end
    epoch = re.search(r"1epoch results: \[train\].*?[ ,]time=((?:[\d.]+ (?:hour|minute|second)s?(?:, | and )?)+)", log)
    if epoch is None:
        raise ValueError("no epoch results in train.log")
    units = {"hour": 3600, "minute": 60, "second": 1}
    wall = sum(float(n) * units[unit] for n, unit in re.findall(r"([\d.]+) (hour|minute|second)", epoch.group(1)))
    audio = steps * batch_size * seconds  # ESPnet's batch_size is the global batch, split over GPUs
    stats = {"wall_s": wall, "audio_s": audio, "audio_per_s": audio / wall, "losses": _interval_means(log, "loss")}
    step_s, data_s = _interval_means(log, "train_time")[1:], _interval_means(log, "iter_time")[1:]
    stats["steady_step_ms"] = 1000 * sum(step_s) / len(step_s) if step_s else None
    stats["steady_data_wait_ms"] = 1000 * sum(data_s) / len(data_s) if data_s else None
    stats["steady_audio_per_s"] = 1000 * batch_size * seconds / stats["steady_step_ms"] if step_s else None
    return stats


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mamba_base,transformer_base")
    parser.add_argument("--ngpu", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=8, help="utterances per step (all GPUs together)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--amp", default="true", choices=("true", "false"), help="bf16 autocast")
    parser.add_argument("--num_workers", type=int, default=2, help="data-loader processes")
    parser.add_argument("--work_dir", type=Path, required=True)
    parser.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                        help="a ModelConfig field for every preset, e.g. compile_cnn=true (repeatable)")
    args = parser.parse_args(cmd)
    if "," in str(args.work_dir.resolve()):  # ESPnet splits "path,name,type" at every comma
        parser.error(f"--work_dir {args.work_dir} has a comma in its path, which ESPnet's data options cannot take")
    corpus = args.work_dir / "corpus"
    write_corpus(corpus, utterances=args.batch_size * 4, seconds=args.seconds)
    rows = []
    for preset in args.presets.split(","):
        work = args.work_dir / preset
        work.mkdir(parents=True, exist_ok=True)
        write_config(work / "config.yaml", preset, args.batch_size, args.steps, args.amp == "true",
                     dict(args.override), args.num_workers)
        stats = summarize(run_training(work, corpus, work / "config.yaml", args.ngpu), args.steps,
                          args.batch_size, args.seconds)  # fmt: skip
        losses = stats["losses"]
        rows.append((preset, stats, losses[0] if losses else float("nan"), losses[-1] if losses else float("nan")))
    print("\n| preset | GPUs | steps | batch x s | wall s | audio s / s | after the first log: audio s / s "
          "| step ms | of it waiting for data ms | loss first log | loss last log |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset, stats, first, last in rows:
        steady = (f"{_cell(stats['steady_audio_per_s'], '.0f')} | {_cell(stats['steady_step_ms'], '.1f')} | "
                  f"{_cell(stats['steady_data_wait_ms'], '.1f')}")
        print(f"| {preset} | {args.ngpu} | {args.steps} | {args.batch_size} x {args.seconds:g} | "
              f"{stats['wall_s']:.1f} | {stats['audio_per_s']:.0f} | {steady} | {first:.3f} | {last:.3f} |")  # fmt: skip


def _cell(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
