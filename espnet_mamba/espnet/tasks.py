"""Registration of our classes into ESPnet's tasks, and task classes that carry it.

ESPnet has no plugin mechanism: tasks choose classes from module-level ``ClassChoices``.
Importing this module adds ``encoder: mamba_hubert`` (SSL and ASR tasks),
``model: mamba_hubert`` (SSL task) and the s3prl upstream ``mamba_hubert`` (for ASR
``frontend: s3prl``). ESPnet's multi-GPU launcher spawns workers that unpickle the task class;
since ours live here, each worker imports this module and registers again. Both task classes
train with :class:`~espnet_mamba.espnet.trainer.ResumableTrainer`, so a run killed while it wrote
a checkpoint resumes; ESPnet's ``--use_deepspeed`` wants its own trainer and refuses them.
"""

from espnet2.tasks import asr as espnet_asr
from espnet2.tasks import ssl as espnet_ssl
from espnet2.tasks.asr import ASRTask
from espnet2.tasks.ssl import SSLTask

from espnet_mamba.espnet.checkpoint import ENCODER_NAME
from espnet_mamba.espnet.encoder import MambaHuBERTEncoder
from espnet_mamba.espnet.ssl_model import MambaHuBERTSSLModel
from espnet_mamba.espnet.trainer import ResumableTrainer

NAME = ENCODER_NAME  # of the encoder and of the SSL model in ESPnet's choices


def register() -> None:
    """Make ``mamba_hubert`` selectable in ESPnet's SSL and ASR tasks (idempotent), and as the
    s3prl upstream of ESPnet's ``frontend: s3prl`` (importing s3prl_upstream adds it)."""
    import s3prl_upstream  # noqa: F401

    espnet_ssl.encoder_choices.classes[NAME] = MambaHuBERTEncoder
    espnet_ssl.model_choices.classes[NAME] = MambaHuBERTSSLModel
    espnet_asr.encoder_choices.classes[NAME] = MambaHuBERTEncoder


register()


class MambaSSLTask(SSLTask):
    """ESPnet's SSL task with ``mamba_hubert`` registered (also in spawned workers), trained by
    :class:`ResumableTrainer`."""

    trainer = ResumableTrainer


class MambaASRTask(ASRTask):
    """ESPnet's ASR task with ``mamba_hubert`` registered (also in spawned workers), trained by
    :class:`ResumableTrainer`."""

    trainer = ResumableTrainer
