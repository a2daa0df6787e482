"""A soundfile-based ``torchaudio.load``.

torchaudio 2.9 made ``torchaudio.load`` a wrapper of TorchCodec, which is not installed with
torchaudio and needs FFmpeg's libraries. s3prl's datasets (SID, IC, PR/ASR, SF, ER) only read
WAV and FLAC files, which soundfile reads without either.
"""

from typing import BinaryIO, Tuple, Union

import numpy as np
import soundfile
import torch


def load(
    uri: Union[str, BinaryIO],
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format=None,
    buffer_size: int = 4096,
    backend=None,
) -> Tuple[torch.Tensor, int]:
    """Audio as float32 in [-1, 1]: (channels, frames) (or (frames, channels)), sample rate.

    Same arguments as torchaudio's ``load``; ``buffer_size`` and ``backend`` are ignored, and
    only ``normalize=True`` (float output) is supported.
    """
    if not normalize:
        raise ValueError("the soundfile torchaudio.load stand-in only returns float audio (normalize=True)")
    data, sample_rate = soundfile.read(
        uri if hasattr(uri, "read") else str(uri),
        start=frame_offset,
        frames=num_frames,
        dtype="float32",
        always_2d=True,
        format=format,
    )
    wav = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return wav, sample_rate
