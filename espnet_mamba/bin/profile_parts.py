"""Where the time goes, on CUDA, with CUDA-event timing (median of 3 after a warm-up).

``--mode infer`` (default): the waveform CNN (eager and under torch.compile) against the
positional conv + blocks of one ``extract_features``. ``--mode train``: one pretraining step
(forward, masked-prediction loss, backward; see ``espnet_mamba.benchmarking.offline_step``) on
``--batch`` utterances: its time, the host's part of it (queueing the step's work), the time
and number of its kernels, and its peak memory. A step whose host part is as long as the step
is bound by the host, not by its kernels. With ``--kernels N``, also the N kernels that
take the most GPU time in one forward (CNN compiled) or one training step (torch.profiler);
with ``--ops N``, the N ops (with their input shapes) whose own kernels take the most.

    python -m espnet_mamba.bin.profile_parts --presets mamba_base,transformer_base --seconds 640 [--kernels 20]
    python -m espnet_mamba.bin.profile_parts --mode train --presets mamba_base --seconds 15 --batch 8 --kernels 12
    python -m espnet_mamba.bin.profile_parts --mode train --presets mamba_base --seconds 15 --batch 8 --ops 30
"""

import argparse
import statistics
import time
from typing import Callable, Sequence, Tuple

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import espnet_mamba
from espnet_mamba.benchmarking import PeakMemory, offline_step, time_calls
from espnet_mamba.bin.options import parse_override
from espnet_mamba.validation import SAMPLE_RATE


def cuda_ms(fn, repeat: int = 3) -> float:
    """Median milliseconds of ``repeat`` CUDA-event-timed calls after one warm-up call."""
    return 1000 * statistics.median(time_calls(fn, torch.device("cuda"), warmup=1, repeat=repeat))


def _wait_for_gpu() -> None:
    """Wait for the work queued on the GPU, where there is one."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def host_ms(fn: Callable[[], object], repeat: int = 7) -> float:
    """Median milliseconds the host takes to queue one call of fn: from a synchronised start
    until fn returns, ``repeat`` times after one warm-up call."""
    times = []
    for _ in range(1 + repeat):
        _wait_for_gpu()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    _wait_for_gpu()
    return 1000 * statistics.median(times[1:])


def device_work(fn: Callable[[], object]) -> Tuple[int, float]:
    """The kernels, copies and fills that one call of fn runs on the GPU: their number and
    their summed milliseconds (torch.profiler)."""
    events = [e for e in _profiled(fn, (ProfilerActivity.CUDA,), record_shapes=False).events()
              if e.device_type == DeviceType.CUDA]
    return len(events), sum(e.device_time_total for e in events) / 1e3


def kernel_table(fn: Callable[[], object], top: int,
                 activities: Sequence[ProfilerActivity] = (ProfilerActivity.CUDA,)) -> str:
    """A Markdown table of the ``top`` ops or kernels by device (else CPU) time in one call of fn."""
    on_device = ProfilerActivity.CUDA in activities
    events = _profiled(fn, activities, record_shapes=False).key_averages()
    return _ranked(events, (lambda e: e.device_time_total) if on_device else (lambda e: e.self_cpu_time_total), top,
                   "kernel", lambda e: f"`{e.key.replace('|', '/')[:100]}`")


def op_table(fn: Callable[[], object], top: int,
             activities: Sequence[ProfilerActivity] = (ProfilerActivity.CPU, ProfilerActivity.CUDA)) -> str:
    """A Markdown table of the ``top`` ops of one call of fn, told apart by their input shapes,
    by the device time of the kernels each launched itself (else by their own CPU time): which
    call of, say, ``aten::copy_`` the copy kernels of :func:`kernel_table` belong to."""
    on_device = ProfilerActivity.CUDA in activities
    events = [e for e in _profiled(fn, activities, record_shapes=True).key_averages(group_by_input_shape=True)
              if e.device_type == DeviceType.CPU]
    return _ranked(events, (lambda e: e.self_device_time_total) if on_device else (lambda e: e.self_cpu_time_total),
                   top, "op (input shapes)", lambda e: f"`{e.key}` {e.input_shapes}".replace("|", "/")[:160])


def _profiled(fn: Callable[[], object], activities: Sequence[ProfilerActivity], record_shapes: bool) -> profile:
    """The profile of one call of fn, alone: work queued before it finishes first."""
    _wait_for_gpu()
    with profile(activities=list(activities), record_shapes=record_shapes) as prof:
        fn()
        _wait_for_gpu()
    return prof


def _ranked(events, cost: Callable[[object], float], top: int, heading: str, label: Callable[[object], str]) -> str:
    """Markdown: the ``top`` events by cost (microseconds), with their count and share of the total."""
    events = list(events)
    total = sum(cost(e) for e in events) / 1e3
    lines = [f"| {heading} | ms | calls | share of {total:.1f} ms |", "|---|---|---|---|"]
    for event in sorted(events, key=cost, reverse=True)[:top]:
        lines.append(f"| {label(event)} | {cost(event) / 1e3:.2f} | {event.count} | {cost(event) / 1e3 / total:.1%} |")
    return "\n".join(lines)


def profile_inference(args) -> None:
    print("| preset | whole forward ms | CNN ms | CNN compiled ms (compile s) | pos. conv + blocks ms |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        backbone = espnet_mamba.build_model(preset, **dict(args.override)).backbone.cuda().eval()
        wav = torch.randn(args.batch, int(args.seconds * SAMPLE_RATE), device="cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=getattr(torch, args.dtype)):
            whole = cuda_ms(lambda: backbone.extract_features(wav))
            cnn = cuda_ms(lambda: backbone.feature_extractor(wav))
            x, lengths = backbone.embed(wav, None)
            blocks = cuda_ms(lambda: backbone.encode(x, lengths))
            compiled = torch.compile(backbone.feature_extractor)
            started = time.time()
            compiled(wav)
            compile_s = time.time() - started
            cnn_compiled = cuda_ms(lambda: compiled(wav))
        print(f"| {preset} | {whole:.1f} | {cnn:.1f} | {cnn_compiled:.1f} ({compile_s:.0f}) | {blocks:.1f} |")
        if args.kernels or args.ops:
            backbone.cfg.compile_cnn = True
            with torch.no_grad(), torch.autocast("cuda", dtype=getattr(torch, args.dtype)):
                backbone.extract_features(wav)  # compile outside the profile
                tables = _tables(lambda: backbone.extract_features(wav), args)
            print("".join(f"\n{preset}, {args.seconds:g} s, {args.dtype}, CNN compiled: {t}" for t in tables))


def profile_training(args) -> None:
    tables = []
    print("| preset | batch x s | step ms | host ms | kernels ms | kernels | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        model = espnet_mamba.build_model(preset, **dict(args.override)).cuda()
        wavs = torch.randn(args.batch, int(args.seconds * SAMPLE_RATE), device="cuda")
        lengths = torch.full((args.batch,), wavs.shape[1], device="cuda")
        step = offline_step(model, "train", wavs, lengths, args.dtype)
        step()  # warm-up, outside the memory measurement
        with PeakMemory(wavs.device) as memory:
            ms = cuda_ms(step)
        launches, kernels_ms = device_work(step)
        print(f"| {preset} | {args.batch} x {args.seconds:g} | {ms:.1f} | {host_ms(step):.1f} | {kernels_ms:.1f} "
              f"| {launches} | {memory.peak_mib:.0f} |")
        tables += [f"\n{preset}, {args.batch} x {args.seconds:g} s, {args.dtype}, training step: {t}"
                   for t in _tables(step, args)]
        del model, step
        torch.cuda.empty_cache()
    print("".join(tables))


def _tables(fn: Callable[[], object], args) -> list:
    """The tables asked for by --kernels and --ops, each under its heading, of one call of fn."""
    tables = [f"kernels by GPU time\n\n{kernel_table(fn, args.kernels)}\n"] if args.kernels else []
    return tables + ([f"ops by GPU time\n\n{op_table(fn, args.ops)}\n"] if args.ops else [])


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mamba_base,transformer_base")
    parser.add_argument("--mode", default="infer", choices=("infer", "train"))
    parser.add_argument("--seconds", type=float, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--kernels", type=int, default=0, metavar="N",
                        help="also print the N kernels taking the most GPU time")
    parser.add_argument("--ops", type=int, default=0, metavar="N",
                        help="also print the N ops, told apart by input shapes, whose kernels take the most GPU time")
    parser.add_argument("--override", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                        help="ModelConfig field for every preset, e.g. recompute_cnn=true (repeatable)")
    args = parser.parse_args(cmd)
    if not torch.cuda.is_available():
        raise SystemExit("profile_parts needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    (profile_training if args.mode == "train" else profile_inference)(args)


if __name__ == "__main__":
    main()
