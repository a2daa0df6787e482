"""Where inference time goes: the waveform CNN (eager and under torch.compile) against the
positional conv + blocks, on CUDA, with CUDA-event timing (median of 3 after a warm-up).

    python -m espnet_mamba.bin.profile_parts --presets mamba_base,transformer_base --seconds 640
"""

import argparse
import time

import torch

import espnet_mamba


def cuda_ms(fn, repeat: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mamba_base,transformer_base")
    parser.add_argument("--seconds", type=float, default=640)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    args = parser.parse_args(cmd)
    if not torch.cuda.is_available():
        raise SystemExit("profile_parts needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    print("| preset | whole forward ms | CNN ms | CNN compiled ms (compile s) | pos. conv + blocks ms |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        backbone = espnet_mamba.build_model(preset).backbone.cuda().eval()
        wav = torch.randn(1, int(args.seconds * 16000), device="cuda")
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


if __name__ == "__main__":
    main()
