"""ESPnet SSL model ``mamba_hubert``: ESPnet's SSL model with masking inside the encoder.

ESPnet masks the frontend output before the encoder; our encoder owns the waveform CNN, so
the mask (ESPnet's ``Masking`` util, with its mask embedding) goes between the encoder's
``embed`` and ``encode``. Its spans are drawn by ``espnet_mamba.espnet.masking``, the same
spans as ESPnet's util without its per-frame Python loop. Losses (ESPnet's ``HuBERTLoss``) are
unchanged.
"""

from typing import Dict

import torch
from espnet2.ssl.espnet_model import ESPnetSSLModel

from espnet_mamba.espnet.encoder import MambaHuBERTEncoder
from espnet_mamba.espnet.masking import apply_masking


class MambaHuBERTSSLModel(ESPnetSSLModel):
    def __init__(self, frontend, specaug, normalize, preencoder, encoder, **kwargs):
        for name, module in (("frontend", frontend), ("normalize", normalize), ("preencoder", preencoder)):
            if module is not None:
                raise ValueError(
                    f"model mamba_hubert takes raw waveforms: set {name}: null "
                    "(and input_size: 1 for no frontend)"
                )
        if specaug is not None:  # encode() never applies it: HuBERT's masking is the mask util
            raise ValueError("model mamba_hubert masks frames with its mask util, not SpecAugment: set specaug: null")
        if not isinstance(encoder, MambaHuBERTEncoder):
            raise ValueError(f"model mamba_hubert needs encoder: mamba_hubert, got {type(encoder).__name__}")
        super().__init__(frontend, specaug, normalize, preencoder, encoder, **kwargs)

    def encode(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor = None,
        text_lengths: torch.Tensor = None,
        use_final_output: bool = True,
    ) -> Dict:
        """speech (batch, samples) -> {"encoder_output": [output of each block], lengths, mask_info}."""
        # The lengths, read before any of the step's work is queued: the frame lengths follow
        # on the CPU, so that masking and the padding check need no wait for the CNN
        host_lengths = speech_lengths.cpu()
        speech = speech[:, : int(host_lengths.max())]
        host_frame_lengths = self.encoder.frame_lengths(host_lengths)
        with self.encoder._grad_context():
            x, lengths = self.encoder.embed(speech, speech_lengths)
            data = {}
            if "mask" in self.util_attributes:
                x, data["mask_info"] = apply_masking(self.util_modules["mask"], x, host_frame_lengths)
            hidden_states = self.encoder.encode(x, host_frame_lengths)
        data["encoder_output"] = hidden_states[1:]
        data["encoder_output_lengths"] = lengths
        return data
