"""Per-corpus locations for the file-list caches of s3prl's SID and ASV datasets.

s3prl's ``voxceleb1`` (SID) and ``sv_voxceleb1`` (ASV) datasets cache their file lists and
utterance lengths inside the installed s3prl package, under fixed names, whatever corpus the
config names. A second corpus (or a test corpus, or a moved one) then silently reuses the
first one's lists. :func:`isolate` points them at ``CACHE_ROOT/<downstream>/<corpus digest>/``
before the downstream expert builds its datasets.
"""

import hashlib
import importlib
import os
from pathlib import Path
from typing import Iterable

CACHE_ENV = "S3PRL_UPSTREAM_CACHE"


def cache_root() -> Path:
    """``$S3PRL_UPSTREAM_CACHE``, or ``~/.cache/s3prl_upstream``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "s3prl_upstream")


def corpus_cache_dir(downstream: str, corpus_paths: Iterable[str]) -> Path:
    """A directory for one downstream's caches of one corpus (digest of its resolved paths)."""
    digest = hashlib.sha1("\n".join(str(Path(p).resolve()) for p in corpus_paths).encode()).hexdigest()[:16]
    directory = cache_root() / downstream / digest
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def isolate(downstream: str, config: dict) -> None:
    """Redirect the dataset caches of ``downstream`` for the corpus that ``config`` names."""
    if downstream not in ("voxceleb1", "sv_voxceleb1"):
        return
    datarc = config["downstream_expert"]["datarc"]
    dataset = importlib.import_module(f"s3prl.downstream.{downstream}.dataset")
    if downstream == "voxceleb1":
        directory = corpus_cache_dir(downstream, [datarc["file_path"], datarc["meta_data"]])
        dataset.CACHE_PATH = f"{directory}{os.sep}"
    else:
        # sv_voxceleb1 caches in Path(os.path.dirname(__file__)) / ".wav_lengths"
        directory = corpus_cache_dir(downstream, [datarc["file_path"]])
        dataset.__file__ = str(directory / "dataset.py")
