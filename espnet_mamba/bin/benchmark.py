"""Benchmark presets side by side: MACs, wall time, peak memory and RTF against audio length.

    python -m espnet_mamba.bin.benchmark --presets mamba_base,transformer_base \
        --seconds 10,20,40,80,160,320,640 --mode infer,train --dtype float32,bfloat16 \
        --device cuda --ratio_to transformer_base --output_dir exp/benchmark

Prints a Markdown table and writes benchmark.{md,json,tsv,png} to --output_dir.
See espnet_mamba/benchmarking.py for what is measured and how.
"""

import argparse
import shlex
import sys

import torch

from espnet_mamba.benchmarking import BenchmarkSpec, Setting, environment, run_benchmark, write_report
from espnet_mamba.bin.options import parse_override
from espnet_mamba.ops import backend


def _list(text: str):
    return [item.strip() for item in text.split(",") if item.strip()]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", type=_list, required=True, help="comma-separated preset names")
    p.add_argument("--seconds", type=_list, default=_list("10,20,40,80,160,320,640"),
                   help="audio lengths in seconds (default: 10,20,...,640)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", type=_list, default=["infer"], help="any of infer,train,stream")
    p.add_argument("--dtype", type=_list, default=["float32"], help="float32 and/or bfloat16 (autocast)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--warmup", type=int, default=2, help="untimed runs before the timed ones")
    p.add_argument("--repeat", type=int, default=5, help="timed runs; the median is reported (stream: one timed stream)")
    p.add_argument("--chunk_ms", type=float, default=20.0, help="stream: audio per step")
    p.add_argument("--cuda_graphs", action="store_true",
                   help="replay from CUDA graphs: infer, each forward; train, each step (forward, loss, backward); "
                   "stream, the steady-state steps (key/value caches then have a fixed capacity)")
    p.add_argument("--ratio_to", help="add a column: time of this preset / time of the row's preset")
    p.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help="ModelConfig field for every preset, e.g. num_layers=2 (repeatable)")
    p.add_argument("--output_dir", default="exp/benchmark")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice); 1 is steadier "
                   "on a machine other processes share")
    p.add_argument("--chunked_scan_min_train_frames", type=int, metavar="FRAMES",
                   help="with autograd on CUDA, run the chunked scan from this many frames in a batch on, instead of "
                   f"backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES ({backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES}); 0: always, "
                   "a huge number: never (mamba-ssm's path); for measuring where it should be")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.ratio_to and args.ratio_to not in args.presets:
        raise ValueError(f"--ratio_to {args.ratio_to!r} is not among --presets {args.presets}")
    try:
        seconds = [float(s) for s in args.seconds]
    except ValueError as error:
        raise ValueError(f"--seconds wants numbers, got {args.seconds}") from error
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    settings = [Setting(mode, s, args.batch, dtype) for mode in args.mode for dtype in args.dtype for s in seconds]
    spec = BenchmarkSpec(
        presets=args.presets, settings=settings, device=args.device, overrides=dict(args.override),
        warmup=args.warmup, repeat=args.repeat, chunk_ms=args.chunk_ms, cuda_graphs=args.cuda_graphs,
        seed=args.seed,
    )  # fmt: skip
    default_min_frames = backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES
    if args.chunked_scan_min_train_frames is not None:
        backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES = args.chunked_scan_min_train_frames
    try:
        results = run_benchmark(spec, log=lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES = default_min_frames
    command = "python -m espnet_mamba.bin.benchmark " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(write_report(results, args.output_dir, environment(args.device), command, args.ratio_to))


if __name__ == "__main__":
    main()
