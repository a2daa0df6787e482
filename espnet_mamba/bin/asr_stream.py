"""Streaming CTC decoding with a causal Mamba-HuBERT ASR model, chunk by chunk.

    python -m espnet_mamba.bin.asr_stream --model packed/asr.zip --wav_scp data/test/wav.scp \
        --output_dir exp/decode_stream --chunk_ms 160 [--decoder beam --beam_size 8]

``--model``: a packed ESPnet ASR zip, an experiment directory, or a config.yaml (with
``--model_file``). ``--config``: a YAML file of these options (e.g. chunk_ms, decoder,
beam_size, token_beam); options on the command line win. Prints partial hypotheses as the
audio arrives and the final one; writes ``text`` (Kaldi), ``hyp_stream.trn`` (sclite),
``stream_stats.json`` (real-time factor, per-chunk compute, token delay) and
``token_delays.txt`` (each token's frame end, emission time and delay) to ``--output_dir``.

``--offline`` decodes whole utterances with the same decoders instead (any CTC model: for
bidirectional ones, and for long documents, where ESPnet's label-synchronous beam search is
slow); it writes ``hyp_offline.trn`` and ``offline_stats.json``.

``--quantize_asr_model``: the model's linear layers in int8 (CPU; see
:mod:`espnet_mamba.quantization`), about 15% off mamba_base's CPU stream (docs/benchmarks.md).

Benchmark mode (random weights, noise input, no model or data needed):

    python -m espnet_mamba.bin.asr_stream --bench_presets mamba_small,causal_transformer_small \
        --bench_seconds 10 --chunk_ms 20,160,640 --output_dir exp/stream_bench
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from espnet_mamba import asr_streaming
from espnet_mamba.audio import iter_wav_scp
from espnet_mamba.ctc_decoding import build_decoder
from espnet_mamba.quantization import quantize_linear_int8
from espnet_mamba.validation import SAMPLE_RATE


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML file of option defaults")
    p.add_argument("--model", help="packed ASR zip, experiment dir or config.yaml")
    p.add_argument("--model_file", help="the .pth for a config.yaml --model (default: best beside it)")
    p.add_argument("--wav_scp", help="Kaldi wav.scp of 16 kHz mono files")
    p.add_argument("--output_dir", type=Path, help="required, here or in --config")
    p.add_argument("--chunk_ms", default="160",
                   help=f"chunk length, {asr_streaming.MIN_CHUNK_MS}..{asr_streaming.MAX_CHUNK_MS} ms "
                        "(benchmark mode: a comma-separated list)")
    p.add_argument("--offline", action="store_true",
                   help="decode whole utterances with the same CTC decoders (any CTC model, bidirectional too)")
    p.add_argument("--decoder", choices=("greedy", "beam"), default="greedy")
    p.add_argument("--beam_size", type=int, default=8)
    p.add_argument("--token_beam", type=int, default=16, help="tokens tried per frame by the beam search")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quantize_asr_model", action="store_true",
                   help="int8 linear layers (dynamic quantisation; CPU only), as ESPnet's option of that name")
    p.add_argument("--quiet", action="store_true", help="do not print partial hypotheses")
    p.add_argument("--bench_presets", help="benchmark mode: comma-separated causal presets")
    p.add_argument("--bench_seconds", type=float, default=10.0)
    p.add_argument("--bench_repeats", type=int, default=1,
                   help="benchmark mode: timed streams per preset and chunk length (RTF: their median)")
    return p


def decode(args) -> dict:
    if not args.model or not args.wav_scp:
        raise SystemExit("asr_stream: --model and --wav_scp are needed (or --bench_presets)")
    chunk_ms = None if args.offline else float(args.chunk_ms)
    size = None if args.offline else asr_streaming.chunk_samples(chunk_ms)
    asr_model, train_args = asr_streaming.load_asr_model(args.model, args.model_file, args.device)
    if args.quantize_asr_model:
        asr_model = quantize_linear_int8(asr_model)
    blank = getattr(asr_model, "blank_id", 0)
    decoder = build_decoder(args.decoder, args.beam_size, args.token_beam, blank)
    if args.offline:
        asr_streaming.check_ctc(asr_model)
    else:
        recognizer = asr_streaming.StreamingRecognizer.from_asr_model(asr_model, decoder)
    to_text = asr_streaming.TokenText(train_args)
    results, delays, lines, timing_lines = [], [], [], []
    for utt_id, wav in iter_wav_scp(args.wav_scp):
        def show(end_sample, hypothesis, utt_id=utt_id):
            if not args.quiet:
                print(f"{utt_id} {end_sample / SAMPLE_RATE:7.2f}s  {to_text(hypothesis.tokens)}", flush=True)

        if args.offline:
            result = asr_streaming.offline_decode(asr_model, wav, decoder)
        else:
            result = recognizer.run(wav, size, on_partial=show)
            for position, timing in enumerate(asr_streaming.token_timings(result, recognizer.frame_end_sample)):
                delays.append(timing.delay_s)
                timing_lines.append(
                    f"{utt_id} {position} {to_text.token(timing.token)} {timing.frame} "
                    f"{timing.frame_end_s:.3f} {timing.emitted_s:.3f} {1000 * timing.delay_s:.1f}\n"
                )
        text = to_text(result.final.tokens)
        print(f"{utt_id} FINAL  {text}", flush=True)
        results.append(result)
        lines.append((utt_id, text))
    stats = asr_streaming.summarize(results, delays, chunk_ms)
    stats.update(decoder=args.decoder, beam_size=args.beam_size if args.decoder == "beam" else None,
                 device=args.device, torch_threads=torch.get_num_threads(),
                 linear_layers="int8" if args.quantize_asr_model else "float32")
    kind = "offline" if args.offline else "stream"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "text").write_text("".join(f"{u} {t}\n" for u, t in lines), encoding="utf-8")
    (args.output_dir / f"hyp_{kind}.trn").write_text("".join(f"{t} ({u})\n" for u, t in lines), encoding="utf-8")
    (args.output_dir / f"{kind}_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if not args.offline:
        header = "# utt_id position token frame frame_end_s emitted_s delay_ms\n"
        (args.output_dir / "token_delays.txt").write_text(header + "".join(timing_lines), encoding="utf-8")
    return stats


def benchmark(args) -> list:
    rows = []
    for preset in [p.strip() for p in args.bench_presets.split(",") if p.strip()]:
        for chunk_ms in [float(c) for c in args.chunk_ms.split(",")]:
            row = asr_streaming.benchmark_preset(preset, args.bench_seconds, chunk_ms, repeats=args.bench_repeats,
                                                 quantize=args.quantize_asr_model)
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "stream_benchmark.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def parse_args(cmd=None) -> argparse.Namespace:
    """Options from the command line over those of ``--config``."""
    parser = get_parser()
    args = parser.parse_args(cmd)
    if args.config is not None:
        defaults = yaml.safe_load(args.config.read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            parser.error(f"{args.config}: unknown options {unknown}")
        if isinstance(defaults.get("chunk_ms"), list):  # benchmark mode's list, written as YAML
            defaults["chunk_ms"] = ",".join(map(str, defaults["chunk_ms"]))
        parser.set_defaults(**{k: str(v) if k == "chunk_ms" else v for k, v in defaults.items()})
        args = parser.parse_args(cmd)
    if args.output_dir is None:
        parser.error("--output_dir is required (on the command line or in --config)")
    try:
        chunks = [float(c) for c in args.chunk_ms.split(",")]
    except ValueError:
        parser.error(f"--chunk_ms must be a length in ms (benchmark mode: a comma-separated list), "
                     f"got {args.chunk_ms!r}")
    if len(chunks) > 1 and not args.bench_presets:
        parser.error(f"--chunk_ms {args.chunk_ms}: several lengths are for benchmark mode (--bench_presets) only")
    return args


def main(cmd=None):
    args = parse_args(cmd)
    torch.set_num_threads(args.num_threads)
    try:
        if args.bench_presets:
            benchmark(args)
        else:
            print(json.dumps(decode(args), indent=2))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"asr_stream: {error}")


if __name__ == "__main__":
    main()
