"""Feature extraction speed of the ``mamba_hubert`` upstream against s3prl's own ``hubert``
upstream (HuBERT Base architecture), both with random weights, same audio, one process.

    python -m s3prl_upstream.speed --preset mamba_base --seconds 10,60,160 --batch 1 --device cuda

s3prl's hubert upstream loads a "converted" checkpoint; a random one is written to a
temporary file from s3prl's own ``HubertModel`` with its default (Base) configuration.
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

import s3prl_upstream  # noqa: F401  (compat shims, registers mamba_hubert)
from espnet_mamba.validation import SAMPLE_RATE


def random_hubert_checkpoint(path: Path) -> None:
    """A converted s3prl hubert checkpoint of HuBERT Base with random weights."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    symbols = [[f"{i}" for i in range(504)]]
    model_cfg, task_cfg = HubertConfig(label_rate=50), HubertPretrainingConfig()
    model = HubertModel(model_cfg, task_cfg, symbols)
    torch.save(
        {
            "task_cfg": dataclasses.asdict(task_cfg),
            "model_cfg": dataclasses.asdict(model_cfg),
            "model_weight": model.state_dict(),
            "dictionaries_symbols": symbols,
        },
        path,
    )


def time_upstream(upstream, wavs, device: str, repeat: int) -> float:
    """Median seconds of one forward over the list of 1-D waveforms."""
    times = []
    with torch.no_grad():
        for i in range(repeat + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            upstream(wavs)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first run warms up
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mamba_base", help="preset of the random mamba_hubert upstream")
    parser.add_argument("--seconds", default="10,60,160")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(cmd)
    from s3prl import hub

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "hubert_random.pt"
        random_hubert_checkpoint(ckpt)
        upstreams = {
            "hubert (s3prl)": hub.hubert_local(ckpt=str(ckpt)),
            f"mamba_hubert ({args.preset})": hub.mamba_hubert(model_config=args.preset),
        }
    for upstream in upstreams.values():
        upstream.to(args.device).eval()
    print(f"| audio s | batch | {' | '.join(f'{name} ms' for name in upstreams)} | speed-up |")
    print("|---|---|" + "---|" * len(upstreams) + "---|")
    for seconds in (float(s) for s in args.seconds.split(",")):
        wavs = [torch.randn(int(seconds * SAMPLE_RATE), device=args.device) for _ in range(args.batch)]
        ms = [1000 * time_upstream(u, wavs, args.device, args.repeat) for u in upstreams.values()]
        print(f"| {seconds:g} | {args.batch} | {' | '.join(f'{m:.1f}' for m in ms)} | {ms[0] / ms[1]:.2f} |")


if __name__ == "__main__":
    main()
