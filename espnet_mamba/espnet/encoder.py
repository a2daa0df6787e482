"""ESPnet encoder ``mamba_hubert``: the whole Mamba-HuBERT backbone behind ESPnet's AbsEncoder.

It takes raw 16 kHz waveforms, so recipes set ``input_size: 1`` (no ESPnet frontend),
``normalize: null`` and ``preencoder: null``. Its ``backbone`` is exactly
:class:`espnet_mamba.MambaHuBERT`, so one state dict serves ESPnet, s3prl and
``espnet_mamba.build_model``.
"""

import contextlib
import logging
from typing import Optional

import torch
from espnet2.asr.encoder.abs_encoder import AbsEncoder

from espnet_mamba.config import load_config
from espnet_mamba.model import MambaHuBERT
from espnet_mamba.validation import check_waveforms


class MambaHuBERTEncoder(AbsEncoder):
    """Args (the YAML ``encoder_conf``):
        input_size: given by ESPnet; must be 1 (raw waveform).
        preset: a name from ``espnet_mamba.list_presets()``.
        pretrained: a checkpoint to start from (see ``espnet_mamba.espnet.checkpoint``); its
            model config replaces the preset, ``overrides`` still apply (e.g. dropout).
        freeze_cnn: keep the waveform CNN frozen (HuBERT fine-tuning).
        freeze_encoder_steps: run the whole backbone without gradients for the first N
            optimizer updates, then train all but the (optionally frozen) CNN. The encoder
            counts training batches; :class:`~espnet_mamba.espnet.trainer.ResumableTrainer`
            tells it ESPnet's ``accum_grad`` (batches per update) and, on ``--resume``, the
            batches already trained. (Under DDP every parameter of the backbone goes without
            a gradient while it is frozen: set ``unused_parameters: true``.)
        overrides: ModelConfig fields, e.g. ``num_layers: 2``.
    """

    def __init__(
        self,
        input_size: int = 1,
        preset: str = "mamba_base",
        pretrained: Optional[str] = None,
        freeze_cnn: bool = False,
        freeze_encoder_steps: int = 0,
        **overrides,
    ):
        super().__init__()
        if input_size != 1:
            raise ValueError(
                f"encoder mamba_hubert takes raw waveforms: set input_size: 1 and no frontend "
                f"(got input_size {input_size})"
            )
        if pretrained:
            from espnet_mamba.espnet.checkpoint import load_pretrained

            self.backbone = load_pretrained(pretrained, **overrides).backbone
            logging.info("mamba_hubert: backbone loaded from %s", pretrained)
        else:
            self.backbone = MambaHuBERT(load_config(preset, **overrides))
        self.freeze_cnn = freeze_cnn
        self.freeze_encoder_steps = freeze_encoder_steps
        self.trained_batches = 0  # on the host: reading a device counter would wait for the GPU
        self.batches_per_update = 1
        if freeze_cnn:
            self.backbone.feature_extractor.requires_grad_(False)

    def output_size(self) -> int:
        return self.backbone.output_size

    @property
    def encoders(self) -> torch.nn.ModuleList:
        """The blocks (ESPnet's espnet_ssl frontend counts them)."""
        return self.backbone.layers

    def _grad_context(self):
        frozen = self.training and self.trained_batches < self.freeze_encoder_steps * self.batches_per_update
        if self.training:
            self.trained_batches += 1
        return torch.no_grad() if frozen else contextlib.nullcontext()

    def embed(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """Waveforms (batch, samples[, 1]) -> projected CNN features (batch, frames, D), lengths."""
        if speech.dim() == 3 and speech.shape[-1] == 1:
            speech = speech[..., 0]
        speech_lengths = check_waveforms(speech, speech_lengths, None, self.backbone.feature_extractor.receptive_field)
        cnn = torch.no_grad() if self.freeze_cnn else contextlib.nullcontext()
        with cnn:
            return self.backbone.embed(speech, speech_lengths)

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """Projected features -> [input to block 1, output of each block]. ``lengths`` on the
        CPU (see :meth:`frame_lengths`) spare a wait for the GPU in the middle of the step."""
        return self.backbone.encode(x, lengths)

    def frame_lengths(self, speech_lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance from its samples, on the device of ``speech_lengths``: from a CPU
        copy taken before the CNN runs, masking and the padding check need no read of the GPU."""
        return self.backbone.feature_extractor.output_lengths(speech_lengths.long())

    def forward(
        self,
        xs_pad: torch.Tensor,
        ilens: torch.Tensor,
        prev_states: Optional[torch.Tensor] = None,
        masks: Optional[torch.Tensor] = None,
        return_all_hs: bool = False,
    ):
        """xs_pad (batch, samples) -> (last hidden state (batch, frames, D), lengths, None).

        With ``return_all_hs`` the first element is (last, [output of each block]), as
        ESPnet's SSL model expects. ``masks`` (padding) is implied by ``ilens``.
        """
        host_lengths = None if ilens is None else self.frame_lengths(ilens.cpu())  # before the step's GPU work
        with self._grad_context():
            x, lengths = self.embed(xs_pad, ilens)
            hidden_states = self.encode(x, host_lengths)
        if return_all_hs:
            return (hidden_states[-1], hidden_states[1:]), lengths, None
        return hidden_states[-1], lengths, None
