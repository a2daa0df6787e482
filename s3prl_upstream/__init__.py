"""Mamba-HuBERT as an s3prl upstream named ``mamba_hubert``.

``import s3prl_upstream`` (before anything imports s3prl) makes s3prl 0.4.18 work on the
installed torch/torchaudio/huggingface_hub (:mod:`s3prl_upstream.compat`) and adds
``mamba_hubert`` to ``s3prl.hub`` (:mod:`s3prl_upstream.registration`), where
``run_downstream.py -u``, ``S3PRLUpstream`` and ESPnet's ``frontend: s3prl`` look it up.
"""

from s3prl_upstream import compat

compat.apply()

from s3prl_upstream.registration import UPSTREAM_NAME, register  # noqa: E402  (after the shims)

register()

__all__ = ["UPSTREAM_NAME", "register"]
