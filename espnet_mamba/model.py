"""The Mamba-HuBERT backbone and its pretraining model.

waveform (batch, samples) -> CNN -> LayerNorm -> Linear -> (+ positional conv) -> LayerNorm
-> blocks -> hidden states. Knows nothing of ESPnet or s3prl.
"""

import logging
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from espnet_mamba.config import ModelConfig, load_config
from espnet_mamba.nn.attention import FixedKVCache
from espnet_mamba.nn.feature_extractor import FeatureExtractor
from espnet_mamba.nn.layers import ConBiMambaLayer, MambaLayer, TransformerLayer, build_mixer, zero_padding
from espnet_mamba.nn.positional import ConvPositionalEmbedding
from espnet_mamba.streaming import StreamState
from espnet_mamba.validation import check_waveforms, checked_lengths

logger = logging.getLogger(__name__)


def build_layer(cfg: ModelConfig) -> nn.Module:
    """One encoder block of ``cfg.layer_type``."""
    d = cfg.d_model
    if cfg.layer_type == "transformer":
        return TransformerLayer(d, cfg.heads, cfg.ffn_dim, cfg.dropout, cfg.attention_dropout, cfg.causal)
    if cfg.layer_type == "conbimamba":
        mixer = build_mixer("extbimamba", d, cfg.mamba_kwargs(), cfg.bi_combine)
        return ConBiMambaLayer(d, mixer, cfg.ffn_dim, cfg.conv_kernel, cfg.dropout)
    mixer = build_mixer(cfg.layer_type, d, cfg.mamba_kwargs(), cfg.bi_combine)
    return MambaLayer(d, mixer, cfg.ffn_dim, cfg.dropout)


class MambaHuBERT(nn.Module):
    """The backbone: waveform -> per-block hidden states."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(cfg.extractor_mode, cfg.conv_layers, conv_bias=cfg.conv_bias,
                                                  recompute=cfg.recompute_cnn)
        self.feature_norm = nn.LayerNorm(self.feature_extractor.output_dim)
        self.feature_proj = nn.Linear(self.feature_extractor.output_dim, cfg.d_model)
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.pos_conv = (
            ConvPositionalEmbedding(cfg.d_model, cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.causal)
            if cfg.pos_conv_kernel
            else None
        )
        self.encoder_norm = nn.LayerNorm(cfg.d_model)
        self.encoder_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(build_layer(cfg) for _ in range(cfg.num_layers))

    @property
    def output_size(self) -> int:
        return self.cfg.d_model

    def _cnn(self, wavs: torch.Tensor):
        """The CNN to run: compiled once (dynamic shapes) where ``compile_cnn``, on CUDA and
        without autograd. With autograd it runs eagerly: in torch 2.11 Inductor fails on the
        backward of the compiled CNN with dynamic shapes ("shape '[1000, 512]' is invalid for
        input of size 1", H200)."""
        if not (self.cfg.compile_cnn and wavs.is_cuda and not torch.is_grad_enabled()):
            return self.feature_extractor
        if "_compiled_cnn" not in self.__dict__:  # kept out of the module tree and state dict
            self.__dict__["_compiled_cnn"] = torch.compile(self.feature_extractor, dynamic=True)
        return self.__dict__["_compiled_cnn"]

    def embed(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples), (batch,) -> projected CNN features (batch, frames, D), frame lengths.

        This is where HuBERT's masking applies, between ``embed`` and ``encode``. In training,
        ``dither`` adds its noise to the waveforms first.
        """
        self._check_float32_parameters()
        if self.training and self.cfg.dither > 0:
            wavs = wavs + self.cfg.dither * torch.randn_like(wavs)
        feats, frame_lengths = self._cnn(wavs)(wavs, lengths)
        x = self.dropout_input(self.feature_proj(self.feature_norm(feats)))
        return x, frame_lengths

    def _check_float32_parameters(self) -> None:
        """The CNN's statistics, the positional conv and the stream's buffers work in float32;
        lower precision comes from autocast, not from casting the model."""
        dtype = self.feature_norm.weight.dtype  # a norm: int8 linear layers have no weight tensor
        if dtype != torch.float32:
            raise ValueError(f"the model's parameters are {dtype}: keep them float32 and run the model under "
                             "torch.autocast for bfloat16 or float16")  # fmt: skip

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """(batch, frames, D) -> [input to block 1, output of block 1, ..., of block N].

        ``lengths`` (batch,), the real frames, may be on the CPU: then finding whether any
        frame is padding needs no wait for the GPU (``extract_features``, the pretraining
        forward and ESPnet's adapters pass them so).
        """
        # Without padding the blocks need no masks (attention keeps its flash kernel). Meta
        # tensors (MAC counting) have no values to compare.
        if lengths is not None and not lengths.is_meta:
            lengths = None if bool((lengths == x.shape[1]).all()) else lengths.to(x.device, non_blocking=True)
        x = zero_padding(x, lengths)
        if self.pos_conv is not None:
            x = x + self.pos_conv(x)
        x = self.encoder_dropout(self.encoder_norm(x))
        hidden_states = [x]
        recompute = self.cfg.recompute_blocks and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, lengths, use_reentrant=False) if recompute else layer(x, lengths)
            hidden_states.append(x)
        return hidden_states

    def extract_features(
        self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None, sample_rate: Optional[int] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """wavs (batch, samples) float at 16 kHz, right-padded; wav_lens (batch,) or None.

        Returns the hidden states [(batch, frames, D)] * (num_layers + 1) and frame lengths.
        Raises ValueError on bad input (see :func:`espnet_mamba.validation.check_waveforms`).
        """
        wav_lens, host_lens = checked_lengths(wavs, wav_lens, sample_rate, self.feature_extractor.receptive_field)
        x, lengths = self.embed(wavs, wav_lens)
        return self.encode(x, self.feature_extractor.output_lengths(host_lens)), lengths

    # Streaming (causal presets) -------------------------------------------------------------

    def init_stream(self, batch_size: int, device=None, max_frames: Optional[int] = None) -> StreamState:
        """The state before the first sample. Raises RuntimeError for non-causal models.

        ``max_frames``: give the causal Transformer's blocks fixed-capacity key/value caches
        for streams of up to that many frames (50 per second), so that every step has the
        same shapes (CUDA graphs); ``stream`` then raises ValueError past it. None: caches
        that grow without limit. Mamba blocks carry fixed-size states either way.
        """
        if not self.cfg.causal:
            raise RuntimeError(
                f"streaming needs a causal model; layer_type {self.cfg.layer_type!r} with causal=False is not"
            )
        device = device if device is not None else next(self.parameters()).device
        with torch.no_grad():
            pos_conv_weight = None if self.pos_conv is None else self.pos_conv.conv.weight
        layers = [
            layer.attention.init_cache(batch_size, max_frames, device)
            if max_frames is not None and isinstance(layer, TransformerLayer)
            else None
            for layer in self.layers
        ]
        return StreamState(
            conv=self.feature_extractor.init_state(batch_size, device),
            pos_conv=None,
            pos_conv_weight=pos_conv_weight,
            layers=layers,
            samples=0,
        )

    @torch.no_grad()
    def stream(self, chunk: torch.Tensor, state: StreamState) -> Tuple[List[torch.Tensor], StreamState]:
        """Feed the next samples (batch, S), S >= 0, of a 16 kHz stream.

        Returns the hidden states of the frames these samples complete (like
        ``extract_features``, new frames only, possibly none) and the new state. Any split of
        the audio into chunks gives the frames of one offline ``extract_features``.
        """
        check_waveforms(chunk, None, None, min_samples=0)
        self._check_float32_parameters()
        if chunk.shape[0] != state.conv.pending[0].shape[0]:
            raise ValueError(f"the chunk holds {chunk.shape[0]} streams, the state {state.conv.pending[0].shape[0]} "
                             "(init_stream's batch_size)")  # fmt: skip
        capacity = min((c.capacity for c in state.layers if isinstance(c, FixedKVCache)), default=None)
        if capacity is not None:
            frames = int(self.feature_extractor.output_lengths(torch.tensor(state.samples + chunk.shape[1])))
            if frames > capacity:
                raise ValueError(
                    f"the stream reaches {frames} frames, past its key/value caches' capacity of {capacity} "
                    "(init_stream's max_frames)"
                )
        return self.stream_step(chunk, state)

    @torch.no_grad()
    def stream_step(self, chunk: torch.Tensor, state: StreamState) -> Tuple[List[torch.Tensor], StreamState]:
        """``stream`` without the input checks, which synchronise with the host: the step
        that a CUDA graph can capture (for a fixed chunk size, once the CNN's buffers have
        reached their steady size). Without gradients, as ``stream``: the inference kernels
        (the CNN's first layer, the one-frame Mamba step) run only where none is needed."""
        feats, conv_state = self.feature_extractor.forward_chunk(chunk, state.conv)
        x = self.feature_proj(self.feature_norm(feats))
        pos_conv, layer_states = state.pos_conv, list(state.layers)
        if x.shape[1] > 0:
            if self.pos_conv is not None:
                update, pos_conv = self.pos_conv.forward_chunk(x, pos_conv, state.pos_conv_weight)
                x = x + update
            x = self.encoder_norm(x)
        hidden_states = [x]
        for i, layer in enumerate(self.layers):
            if x.shape[1] > 0:
                x, layer_states[i] = layer.forward_chunk(x, layer_states[i])
            hidden_states.append(x)
        new_state = StreamState(conv_state, pos_conv, state.pos_conv_weight, layer_states, state.samples + chunk.shape[1])
        return hidden_states, new_state


class MambaHuBERTForPretraining(nn.Module):
    """Backbone + what HuBERT pretraining adds: the mask embedding and the label head
    (Linear D -> final_dim, then ``num_classes`` label embeddings, logits / 0.1)."""

    logit_temperature = 0.1

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = MambaHuBERT(cfg)
        self.mask_embedding = nn.Parameter(torch.rand(cfg.d_model))
        self.final_proj = nn.Linear(cfg.d_model, cfg.final_dim)
        self.label_embeddings = nn.Linear(cfg.final_dim, cfg.num_classes)

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """Label logits (batch, frames, num_classes) with ``mask`` (batch, frames) frames
        replaced by the mask embedding; and frame lengths. Raises ValueError on bad input."""
        cnn = self.backbone.feature_extractor
        wav_lens, host_lens = checked_lengths(wavs, wav_lens, None, cnn.receptive_field)
        if mask is not None:
            frames = int(cnn.output_lengths(torch.tensor(wavs.shape[1])))
            if mask.dtype != torch.bool or tuple(mask.shape) != (wavs.shape[0], frames):
                raise ValueError(f"mask must be a bool tensor (batch, frames) = ({wavs.shape[0]}, {frames}) for these "
                                 f"waveforms, got {mask.dtype} of shape {tuple(mask.shape)}")  # fmt: skip
        return self.label_logits(wavs, wav_lens, cnn.output_lengths(host_lens), mask)

    def label_logits(
        self,
        wavs: torch.Tensor,
        wav_lens: Optional[torch.Tensor],
        frame_lengths: Optional[torch.Tensor],
        mask: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`forward` on checked input, without reading the device (so it can be
        captured in a CUDA graph): ``wav_lens`` on the waveforms' device and ``frame_lengths``
        (the blocks' real frames, best on the CPU), or both None where nothing is padded."""
        x, lengths = self.backbone.embed(wavs, wav_lens)
        if mask is not None:
            x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        last = self.backbone.encode(x, frame_lengths)[-1]
        return self.label_embeddings(self.final_proj(last)) / self.logit_temperature, lengths

    def extract_features(self, wavs, wav_lens=None, sample_rate=None):
        return self.backbone.extract_features(wavs, wav_lens, sample_rate)

    def init_stream(self, batch_size: int, device=None, max_frames: Optional[int] = None) -> StreamState:
        return self.backbone.init_stream(batch_size, device, max_frames)

    def stream(self, chunk: torch.Tensor, state: StreamState):
        return self.backbone.stream(chunk, state)

    def stream_step(self, chunk: torch.Tensor, state: StreamState):
        return self.backbone.stream_step(chunk, state)


def build_model(preset: Optional[str] = None, **overrides) -> MambaHuBERTForPretraining:
    """The full pretraining model of a preset (see :func:`espnet_mamba.list_presets`)."""
    return MambaHuBERTForPretraining(load_config(preset, **overrides))
