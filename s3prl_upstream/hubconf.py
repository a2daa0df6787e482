"""The s3prl hub entry: ``mamba_hubert``."""

from typing import Optional

from s3prl_upstream.expert import UpstreamExpert


def mamba_hubert(
    ckpt: Optional[str] = None, model_config: Optional[str] = None, refresh: bool = False, **overrides
) -> UpstreamExpert:
    """Mamba-HuBERT upstream.

    ckpt: path of a Mamba-HuBERT checkpoint (packed ESPnet zip, ESPnet experiment ``.pth`` with
        its ``config.yaml``, or a ``save_pretrained`` file); s3prl's ``-k`` / ``path_or_url``.
    model_config: only without ``ckpt``: a preset name or YAML file of ModelConfig fields for a
        randomly initialised model (smoke tests, pipelines); s3prl's ``-g``.
    refresh: ignored; checkpoints are local files, nothing is downloaded.
    overrides: ModelConfig fields that do not change shapes, e.g. ``ssm_impl="torch"``
        (``extra_conf`` of ``S3PRLUpstream``).
    """
    return UpstreamExpert(ckpt=ckpt, model_config=model_config, **overrides)
