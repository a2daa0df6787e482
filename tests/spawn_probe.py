"""Runs in a freshly spawned interpreter: which encoders does ESPnet's SSL task offer there?

Deliberately imports nothing of espnet_mamba: only unpickling the task class it is given
may register our classes, as in ESPnet's multi-GPU worker spawn.
"""

from espnet2.tasks import asr as espnet_asr
from espnet2.tasks import ssl as espnet_ssl


def registered_in_child(task_class) -> dict:
    return {
        "ssl_encoder": "mamba_hubert" in espnet_ssl.encoder_choices.classes,
        "ssl_model": "mamba_hubert" in espnet_ssl.model_choices.classes,
        "asr_encoder": "mamba_hubert" in espnet_asr.encoder_choices.classes,
        "task": task_class.__name__,
    }
