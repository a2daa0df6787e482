"""HuBERT's waveform CNN: 7 conv layers, 320x downsampling, 400-sample receptive field.

Two normalisation modes, as in fairseq and torchaudio:

* ``group_norm`` (HuBERT Base): GroupNorm(C, C) after the first conv, i.e. each channel
  normalised over the whole utterance. We compute its statistics over the real frames only,
  so padding changes nothing; it looks at the future, so it is for bidirectional models.
* ``layer_norm``: a LayerNorm over channels after every conv, frame by frame: strictly causal
  and streamable.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from espnet_mamba.ops import layer_norm_gelu, waveform_conv_layer_norm_gelu
from espnet_mamba.ops.backend import autocast_dtype, fits_32_bit_offsets, needs_autograd, use_triton
from espnet_mamba.ops.layer_norm_gelu import waveform_conv_fits_32_bit_offsets

HUBERT_CONV_LAYERS = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


def conv_output_lengths(lengths: torch.Tensor, layers: Sequence[Tuple[int, int, int]]) -> torch.Tensor:
    """Frames produced from ``lengths`` samples: floor((L - k) / s) + 1 per layer (0 if L < k)."""
    for _, kernel, stride in layers:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        lengths = lengths.clamp(min=0)
    return lengths


def receptive_field(layers: Sequence[Tuple[int, int, int]]) -> int:
    field = 1
    for _, kernel, stride in reversed(layers):
        field = (field - 1) * stride + kernel
    return field


MIN_SAMPLES = receptive_field(HUBERT_CONV_LAYERS)  # 400: the samples one output frame sees
FRAME_HOP = math.prod(stride for _, _, stride in HUBERT_CONV_LAYERS)  # 320: the samples between frames


@dataclass
class ConvStreamState:
    """Per layer, the inputs (batch, n, C_in) a streaming CNN has not consumed yet."""

    pending: List[torch.Tensor]


class ConvLayer(nn.Module):
    """Conv1d -> (norm) -> GELU on channels-last (batch, L, C_in) -> (batch, L', C_out).

    The layout stays channels-last throughout, so the per-frame LayerNorm normalises a
    contiguous last dimension and no layout copies surround the conv. On CUDA, a layer with
    several input channels is cuDNN's NHWC conv2d on the (batch, C_in, 1, L) view of x; on CPU,
    and for the first layer's single input channel, it is one matrix product over the unfolded
    windows (batch, L', C_in * k). (H200, bf16: the NHWC conv's forward + backward is 1.5x the
    unfolded product's speed; on this repository's 2-core CPU the product is 2x faster for
    streaming chunks. docs/benchmarks.md, "The waveform CNN on cuDNN's NHWC conv".) Run eagerly,
    the output keeps the product's dtype, so under autocast the activations, the largest
    tensors of long inputs, are stored in bfloat16. On CUDA, LayerNorm and GELU run eagerly as
    one Triton kernel (:mod:`espnet_mamba.ops.layer_norm_gelu`), and in the first layer in
    inference the conv runs inside that kernel too, so its output is never stored; under
    torch.compile Inductor fuses them instead. Tensors past the kernels' 32-bit offsets
    (``KERNEL_MAX_ELEMENTS``) take the PyTorch ops. The parameters are those of ``nn.Conv1d``
    (fairseq/torchaudio names).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: Optional[str], bias: bool):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm_type = norm
        if norm == "layer_norm":
            self.layer_norm = nn.LayerNorm(c_out)
        elif norm == "group_norm":
            self.layer_norm = nn.GroupNorm(c_out, c_out)
        else:
            self.layer_norm = None

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                statistics: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """(batch, L, C_in) -> (batch, L', C_out). GroupNorm only: ``lengths`` (batch,) are the real
        output frames its statistics span; ``statistics``, from :meth:`group_norm_statistics`, are
        used instead where x is a time segment of the utterance."""
        if self._runs_waveform_kernel(x):
            norm = self.layer_norm
            return waveform_conv_layer_norm_gelu(x[..., 0], self.conv.weight, self.conv.bias, self.stride,
                                                 norm.weight, norm.bias, norm.eps, autocast_dtype(x))  # fmt: skip
        x = self._convolve(x)
        if (self.norm_type == "layer_norm" and not torch.compiler.is_compiling() and fits_32_bit_offsets(x)
                and use_triton("auto", x, "cnn_norm")):  # fmt: skip
            norm = self.layer_norm
            return layer_norm_gelu(x, norm.weight, norm.bias, norm.eps)  # one pass, in x's dtype
        dtype = x.dtype  # bfloat16 under autocast: the next layer's product reads it so anyway
        if self.norm_type == "layer_norm":
            x = self.layer_norm(x)
        elif self.norm_type == "group_norm":
            if statistics is None:
                statistics = _mean_and_variance([_moments(x, lengths)], lengths, x.shape[1])
            x = self._group_norm(x, *statistics)
        x = F.gelu(x)
        # Under torch.compile Inductor fuses norm, GELU and the cast the next layer needs;
        # casting here split that fusion (CNN 12 -> 20 ms at 640 s, H200, measured when every
        # layer was an unfolded product).
        return x if torch.compiler.is_compiling() else x.to(dtype)

    def _runs_waveform_kernel(self, x: torch.Tensor) -> bool:
        """Whether the first layer of the causal CNN runs as one Triton kernel, conv included
        (:func:`~espnet_mamba.ops.layer_norm_gelu.waveform_conv_layer_norm_gelu`): CUDA,
        inference (no gradient of the waveform or the layer's parameters), samples at unit
        stride, at least one frame, offsets within 32 bits, and not under torch.compile."""
        return (self.norm_type == "layer_norm" and self.conv.in_channels == 1 and x.shape[1] >= self.kernel
                and x.stride(1) == 1 and not needs_autograd(x, *self.parameters()) and not torch.compiler.is_compiling()
                and waveform_conv_fits_32_bit_offsets(x, self.conv.out_channels, self.kernel, self.stride)
                and use_triton("auto", x, "cnn_first_layer"))  # fmt: skip

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, L, C_in) -> (batch, L', C_out), channels-last in and out."""
        if x.is_cuda and self.conv.in_channels > 1:
            y = F.conv2d(x.transpose(1, 2).unsqueeze(2), self.conv.weight.unsqueeze(2), self.conv.bias,
                         stride=(1, self.stride))  # fmt: skip
            return y.squeeze(2).transpose(1, 2)
        windows = x.unfold(1, self.kernel, self.stride).flatten(2)  # (batch, L', C_in * k)
        return F.linear(windows, self.conv.weight.flatten(1), self.conv.bias)

    def group_norm_statistics(self, blocks: List[torch.Tensor],
                              lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """GroupNorm(C, C)'s mean and variance (batch, 1, C_out), float32, of this layer's conv
        output over each utterance's ``lengths`` real output frames (None: all). ``blocks`` are
        the input (batch, L, C_in) cut into consecutive time segments, each the samples of its
        output frames: the conv runs block by block, so one block's output is alive at a time,
        not the whole utterance's."""
        moments, frames = [], 0
        for block in blocks:
            y = self._convolve(block)
            moments.append(_moments(y, lengths, frames))
            frames += y.shape[1]
        return _mean_and_variance(moments, lengths, frames)

    def _group_norm(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """GroupNorm(C, C) on (batch, L', C) with each channel's mean and variance (batch, 1, C).

        The normalisation is one multiply-add in x's dtype, so a bfloat16 x of a long input gets
        no float32 temporaries of its size (320 s: 1M frames x 512 channels)."""
        scale = self.layer_norm.weight * torch.rsqrt(var + self.layer_norm.eps)
        shift = self.layer_norm.bias - mean * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


def _moments(y: torch.Tensor, lengths: Optional[torch.Tensor], start: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per utterance and channel, the float32 sum and sum of squares (batch, 1, C) of the real
    frames of y (batch, n, C), whose frame i is frame ``start + i`` of utterances of ``lengths``
    frames (None: all real). Float32 reductions of y, sum and norm, with no float32 copy of it."""
    if lengths is not None:
        valid = torch.arange(start, start + y.shape[1], device=y.device)[None] < lengths[:, None]
        y = y * valid[:, :, None].to(y.dtype)  # exact: padding frames become 0
    return (y.sum(1, keepdim=True, dtype=torch.float32),
            torch.linalg.vector_norm(y, dim=1, keepdim=True, dtype=torch.float32).square())  # fmt: skip


def _mean_and_variance(moments: List[Tuple[torch.Tensor, torch.Tensor]], lengths: Optional[torch.Tensor],
                       frames: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (batch, 1, C) from the :func:`_moments` of an utterance's blocks of
    frames, which make ``frames`` frames in all, ``lengths`` of them real (None: all)."""
    count = float(max(frames, 1)) if lengths is None else lengths.clamp(min=1).to(torch.float32)[:, None, None]
    total = torch.stack([block_sum for block_sum, _ in moments]).sum(0)
    total_square = torch.stack([block_square for _, block_square in moments]).sum(0)
    mean = total / count
    return mean, (total_square / count - mean.square()).clamp(min=0)


def _run_layers(layers: Sequence["ConvLayer"], x: torch.Tensor, first_lengths: Optional[torch.Tensor] = None,
                first_statistics: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """x through ``layers``; the first one's GroupNorm, if it has one, takes ``first_lengths`` or,
    where x is a time segment of the utterance, ``first_statistics`` (see :meth:`ConvLayer.forward`)."""
    x = layers[0](x, first_lengths, first_statistics)
    for layer in layers[1:]:
        x = layer(x)
    return x


class FeatureExtractor(nn.Module):
    """Waveform (batch, samples) -> features (batch, frames, C) at 50 Hz for 16 kHz input.

    Args:
        mode: "group_norm" or "layer_norm" (see the module docstring).
        conv_layers: (channels, kernel, stride) per layer.
        recompute: in training, recompute the CNN in the backward pass instead of keeping its
            activations, which dominate the memory of long inputs. The layers after the last
            utterance-level norm (all of them in ``layer_norm`` mode, all but the first in
            ``group_norm`` mode) run over time segments of ``segment_frames`` output frames,
            each segment checkpointed on its own, so that one segment's activations are alive
            at a time; the first layer in ``group_norm`` mode is checkpointed whole.

    Segments are ``segment_frames`` long, by default 8192 frames (164 s) on CUDA and 4096 (82 s)
    elsewhere. Large segments keep the convs large: on an H200 the recomputed LayerNorm CNN's
    step at 320 s took 48 ms with 4096-frame segments against 77 ms with 1024 (113 ms under
    cuDNN's deterministic mode, ESPnet's default). On an H100 (docs/benchmarks.md, 2026-12-08)
    mamba_base's training step at 320 s took 102.2 ms with 8192 against 103.6 with 4096, at the
    same peak memory, and its forward at 640 s 42.5 ms against 42.9 (42.1 in one pass).

    Without autograd (inference, a frozen upstream) every layer runs over the same time
    segments, so only one segment's activations are alive: at 640 s the CNN's first outputs
    alone would be 2M frames x 512 channels. In ``group_norm`` mode the first layer's statistics
    come first, from its conv run over blocks of a segment's size, so that conv runs twice (3
    GMAC more at 160 s, against transformer_base's 2.3 TMAC). The segments also keep the Triton
    kernels' tensors within their 32-bit offsets at any length of audio; where a layer's tensors
    overrun them (a batch of 8 or more segments of 8192 frames), it runs its PyTorch ops
    instead. With autograd and without ``recompute`` the layers run over the whole input, whose
    activations are kept anyway.
    """

    segment_frames: Optional[int] = None  # None: the device's default (the class docstring)

    def __init__(self, mode: str = "group_norm", conv_layers=HUBERT_CONV_LAYERS, conv_bias: bool = False,
                 recompute: bool = False):
        super().__init__()
        self.recompute = recompute
        if mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor mode must be 'group_norm' or 'layer_norm', got {mode!r}")
        self.mode = mode
        self.layer_specs = tuple(tuple(layer) for layer in conv_layers)
        layers, c_in = [], 1
        for i, (c_out, kernel, stride) in enumerate(self.layer_specs):
            norm = "layer_norm" if mode == "layer_norm" else ("group_norm" if i == 0 else None)
            layers.append(ConvLayer(c_in, c_out, kernel, stride, norm, conv_bias))
            c_in = c_out
        self.conv_layers = nn.ModuleList(layers)
        self.output_dim = c_in

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.layer_specs)

    @property
    def stride(self) -> int:
        return math.prod(s for _, _, s in self.layer_specs)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_lengths(lengths, self.layer_specs)

    def forward(self, wavs: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        """wavs: (batch, samples), lengths: (batch,) -> (batch, frames, C), frame lengths."""
        x, layers = wavs[:, :, None], list(self.conv_layers)
        first_lengths = None  # the real frames the first layer's GroupNorm spans
        if lengths is not None and self.mode == "group_norm":
            first_lengths = conv_output_lengths(lengths, self.layer_specs[:1])
        if self.recompute and self.training and torch.is_grad_enabled():
            if self.mode == "group_norm":  # the first layer's norm spans the utterance: checkpointed whole
                x = checkpoint(layers.pop(0), x, first_lengths, use_reentrant=False)
            segments = self._time_segments(layers, x)
            outputs = [checkpoint(_run_layers, layers, seg, use_reentrant=False) for seg in segments]
        elif needs_autograd(x, *self.parameters()) or torch.compiler.is_compiling():
            outputs = [_run_layers(layers, x, first_lengths)]
        else:  # inference: the activations of one segment at a time, not of the whole input
            outputs = self._infer_in_segments(layers, x, first_lengths)
        x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)
        return x, None if lengths is None else self.output_lengths(lengths)

    def _infer_in_segments(self, layers: List["ConvLayer"], x: torch.Tensor,
                            first_lengths: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """The outputs of ``layers`` for each time segment of x (batch, L, 1). In ``group_norm``
        mode, where there are several, the first layer's statistics come first, from a pass of
        its conv over blocks of the segments' size: its output is computed twice, never kept whole."""
        segments = self._time_segments(layers, x)
        statistics = None
        if self.mode == "group_norm" and len(segments) > 1:  # blocks of the first layer's frames in a segment
            blocks = self._time_segments(layers[:1], x, self._segment_length(x) * self.stride // layers[0].stride)
            statistics = layers[0].group_norm_statistics(blocks, first_lengths)
        return [_run_layers(layers, seg, first_lengths, statistics) for seg in segments]

    def _time_segments(self, layers: List["ConvLayer"], x: torch.Tensor,
                       length: Optional[int] = None) -> List[torch.Tensor]:
        """(batch, L, C_in) cut into time segments of ``length`` output frames of ``layers``
        (default :meth:`_segment_length`), each exactly the samples its frames see; [x] where it
        makes one segment."""
        field = receptive_field([(0, layer.kernel, layer.stride) for layer in layers])
        stride = math.prod(layer.stride for layer in layers)
        frames = (x.shape[1] - field) // stride + 1
        length = length or self._segment_length(x)
        if frames <= length:
            return [x]
        return [
            x[:, start * stride : (min(start + length, frames) - 1) * stride + field]
            for start in range(0, frames, length)
        ]

    def _segment_length(self, x: torch.Tensor) -> int:
        """Output frames per time segment: ``segment_frames``, else 8192 on CUDA, 4096 elsewhere."""
        if self.segment_frames is not None:
            return self.segment_frames
        return 8192 if x.is_cuda else 4096

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> ConvStreamState:
        if self.mode != "layer_norm":
            raise RuntimeError("only the 'layer_norm' extractor is causal and streams")
        c_ins = [1] + [c for c, _, _ in self.layer_specs[:-1]]
        return ConvStreamState([torch.zeros(batch_size, 0, c, device=device, dtype=dtype) for c in c_ins])

    def forward_chunk(self, chunk: torch.Tensor, state: ConvStreamState):
        """Streaming: new samples (batch, S) -> the frames they complete (batch, n, C).

        Each layer keeps the inputs its next output still needs, so any split of the audio
        into chunks yields exactly the frames of one offline forward.
        """
        x, pending = chunk[:, :, None], []
        for layer, buffered in zip(self.conv_layers, state.pending):
            x = torch.cat([buffered, x.to(buffered.dtype)], dim=1)
            n = (x.shape[1] - layer.kernel) // layer.stride + 1 if x.shape[1] >= layer.kernel else 0
            pending.append(x[:, n * layer.stride :])
            x = layer(x[:, : (n - 1) * layer.stride + layer.kernel]) if n > 0 else x.new_zeros(
                x.shape[0], 0, layer.conv.out_channels
            )
        return x, ConvStreamState(pending)
