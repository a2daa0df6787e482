"""Our backbone against the raw mamba-ssm stack of ../shared/reference/baselines.md, side by
side in one process (CUDA, mamba-ssm installed).

The raw stack: torchaudio's HuBERT waveform CNN, Linear(512, 768), then 12 x
[LayerNorm, mamba_ssm.Mamba(768, d_state 16, expand 2)] pre-LN residual. Ours: mamba_base with
the same mixer size (``d_state=16, expand=2``), so the difference is our layer form, causal CNN,
positional conv and op dispatch.

    python -m espnet_mamba.bin.compare_raw_mamba --seconds 10,160,640 --dtype bfloat16
"""

import argparse

import torch
import torch.nn as nn

import espnet_mamba
from espnet_mamba.bin.profile_parts import cuda_ms
from espnet_mamba.nn.feature_extractor import HUBERT_CONV_LAYERS
from espnet_mamba.ops import mamba_kernels
from espnet_mamba.validation import SAMPLE_RATE


class RawMambaStack(nn.Module):
    """(batch, samples) -> (batch, frames, 768); the baseline's model."""

    def __init__(self, layers: int = 12, d_model: int = 768):
        super().__init__()
        from mamba_ssm import Mamba
        from torchaudio.models.wav2vec2.components import _get_feature_extractor

        self.cnn = _get_feature_extractor("group_norm", [list(layer) for layer in HUBERT_CONV_LAYERS], bias=False)
        self.proj = nn.Linear(512, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(layers))
        self.mixers = nn.ModuleList(Mamba(d_model, d_state=16, d_conv=4, expand=2) for _ in range(layers))

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        x, _ = self.cnn(wavs, None)
        x = self.proj(x)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        return x


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", default="10,160,640")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--compile_cnn", action="store_true", help="torch.compile our CNN")
    args = parser.parse_args(cmd)
    if not torch.cuda.is_available() or mamba_kernels() is None:
        raise SystemExit("compare_raw_mamba needs a CUDA GPU and mamba-ssm (./setup.sh --cuda)")
    raw = RawMambaStack().cuda().eval()
    ours = espnet_mamba.build_model("mamba_base", d_state=16, expand=2, compile_cnn=args.compile_cnn)
    ours = ours.backbone.cuda().eval()
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(f"| audio s | raw mamba-ssm stack ({count(raw):.1f}M) ms | ours ({count(ours):.1f}M) ms | raw / ours |")
    print("|---|---|---|---|")
    for seconds in (float(s) for s in args.seconds.split(",")):
        wav = torch.randn(1, int(seconds * SAMPLE_RATE), device="cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=getattr(torch, args.dtype)):
            raw_ms = cuda_ms(lambda: raw(wav))
            our_ms = cuda_ms(lambda: ours.extract_features(wav))
        print(f"| {seconds:g} | {raw_ms:.1f} | {our_ms:.1f} | {raw_ms / our_ms:.2f} |")


if __name__ == "__main__":
    main()
