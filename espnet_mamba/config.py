"""Model configuration and the named presets (YAML files in the repository's conf/presets/)."""

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import List, Optional, Tuple

import yaml

from espnet_mamba.nn.feature_extractor import HUBERT_CONV_LAYERS
from espnet_mamba.ops.backend import IMPLS

LAYER_TYPES = ("mamba", "extbimamba", "innbimamba", "conbimamba", "transformer")


@dataclass
class ModelConfig:
    """Everything that shapes a Mamba-HuBERT model. Presets set a few fields; the rest are
    HuBERT Base's."""

    layer_type: str = "mamba"
    d_model: int = 768
    num_layers: int = 12
    causal: bool = True
    # Mamba mixer (the published code: d_state 24, d_conv 4, expand 3)
    d_state: int = 24
    d_conv: int = 4
    expand: float = 3
    dt_rank: str = "auto"
    bi_combine: str = "sum"  # ExtBiMamba: "sum" (paper code) or "concat" (+ Linear 2D -> D)
    # Feed-forward sublayer: width, 0 for none (plain Mamba)
    ffn_dim: int = 0
    # Transformer
    heads: int = 12
    # ConBiMamba
    conv_kernel: int = 31
    # Waveform CNN and positional conv (HuBERT Base); pos_conv_kernel 0 removes the conv
    conv_layers: List[Tuple[int, int, int]] = field(default_factory=lambda: [list(x) for x in HUBERT_CONV_LAYERS])
    # Biases in the CNN's convs (HuBERT: none). With the causal presets' per-frame LayerNorm,
    # a bias keeps digital silence (exact-zero samples) from passing through every layer as
    # zeros at initialisation, where each LayerNorm multiplies its gradient by up to
    # 1/sqrt(eps); but a CTC recipe learned far more slowly with it (docs/asr.md, "Digital
    # silence at initialisation")
    conv_bias: bool = False
    # Standard deviation of Gaussian noise added to the waveform in training (Kaldi's dither;
    # one 16-bit step is 3e-5), 0 for none. It too keeps digital silence off exact zeros, but
    # the per-frame LayerNorm CNN scales it up to speech's level, and the CTC recipe learned far
    # more slowly with it (docs/asr.md)
    dither: float = 0.0
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    # Regularisation
    dropout: float = 0.1
    attention_dropout: float = 0.1
    dropout_input: float = 0.1
    # Pretraining head: 256-d projection, 504 label embeddings
    final_dim: int = 256
    num_classes: int = 504
    # Recompute the waveform CNN in the backward pass instead of storing its activations
    recompute_cnn: bool = False
    # Recompute each block in the backward pass, keeping only its input (trades about one
    # more forward of the blocks for their saved activations, which dominate memory once the
    # CNN is recomputed)
    recompute_blocks: bool = False
    # Compile the waveform CNN with torch.compile on CUDA for inference (fuses its norms and
    # activations; training runs it eagerly, see MambaHuBERT._cnn)
    compile_cnn: bool = False
    # Implementation of the Mamba ops: "auto", "kernel" or "torch"; frames whose decays and
    # states the PyTorch scan forms at once (its memory: batch x chunk x E x N floats)
    ssm_impl: str = "auto"
    scan_chunk_size: int = 16

    def __post_init__(self):
        if self.layer_type not in LAYER_TYPES:
            raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {self.layer_type!r}")
        if self.causal and self.layer_type not in ("mamba", "transformer"):
            raise ValueError(f"layer_type {self.layer_type!r} is bidirectional; it cannot be causal")
        if not self.causal and self.layer_type == "mamba":
            raise ValueError("layer_type 'mamba' is causal: set causal: true")
        if not self.dither >= 0:
            raise ValueError(f"dither is a standard deviation: it must be >= 0, got {self.dither}")
        if self.layer_type in ("transformer", "conbimamba") and self.ffn_dim <= 0:
            raise ValueError(f"layer_type {self.layer_type!r} has a feed-forward sublayer: ffn_dim must be > 0, "
                             f"got {self.ffn_dim}")  # fmt: skip
        if self.bi_combine not in ("sum", "concat"):
            raise ValueError(f"bi_combine must be 'sum' or 'concat', got {self.bi_combine!r}")
        if self.ssm_impl not in IMPLS:
            raise ValueError(f"ssm_impl must be one of {IMPLS}, got {self.ssm_impl!r}")
        if self.scan_chunk_size < 1:
            raise ValueError(f"scan_chunk_size is a number of frames: it must be >= 1, got {self.scan_chunk_size}")
        if self.pos_conv_kernel < 0:
            raise ValueError(f"pos_conv_kernel must be >= 0 (0: no positional conv), got {self.pos_conv_kernel}")
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]

    @property
    def extractor_mode(self) -> str:
        """Per-frame LayerNorm in the CNN for causal models, HuBERT's GroupNorm otherwise."""
        return "layer_norm" if self.causal else "group_norm"

    def mamba_kwargs(self) -> dict:
        return dict(
            d_state=self.d_state, d_conv=self.d_conv, expand=self.expand, dt_rank=self.dt_rank,
            impl=self.ssm_impl, chunk_size=self.scan_chunk_size,
        )  # fmt: skip

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return d


def _preset_dir():
    return resources.files("espnet_mamba.presets")


def list_presets() -> List[str]:
    """Names of the presets, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def load_config(preset: Optional[str] = None, **overrides) -> ModelConfig:
    """The ModelConfig of a preset (or the defaults), with field overrides."""
    values = {}
    if preset is not None:
        if preset not in list_presets():
            raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(list_presets())}")
        values = yaml.safe_load((_preset_dir() / f"{preset}.yaml").read_text()) or {}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ValueError(f"unknown model config fields: {sorted(unknown)}")
    values.update(overrides)
    return ModelConfig(**values)
