"""The state a causal model carries between streaming calls."""

from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from espnet_mamba.nn.feature_extractor import ConvStreamState


@dataclass
class StreamState:
    """Everything a causal backbone needs to continue a stream.

    conv: the waveform CNN's unconsumed inputs per layer.
    pos_conv: the last kernel - 1 inputs (batch, K - 1, D) of the causal positional conv.
    pos_conv_weight: that conv's weight-normalised weight, computed once per stream (the
        normalisation took 8-30 ms per call on the 2-core development CPU, against about
        45 ms for a whole 20 ms step of mamba_base).
    layers: per block, a MambaState or a key/value cache: None before the first frame,
        except for fixed-capacity caches (``init_stream(max_frames=...)``), which start empty.
    samples: samples consumed so far (per stream of the batch).
    """

    conv: ConvStreamState
    pos_conv: Optional[torch.Tensor]
    pos_conv_weight: Optional[torch.Tensor]
    layers: List[Any]
    samples: int
