"""s3prl's ``run_downstream.py`` with the compat shims applied and ``mamba_hubert`` registered.

    python -m s3prl_upstream.run_downstream -m train -u mamba_hubert -k CKPT -d speech_commands \\
        -c S3PRL_CLONE/s3prl/downstream/speech_commands/config.yaml -p EXPDIR --device cpu
    python -m s3prl_upstream.run_downstream -m train -e EXPDIR            # resume
    python -m s3prl_upstream.run_downstream -m evaluate -e EXPDIR/dev-best.ckpt -t test

Arguments are s3prl's own (``--help``). The PyPI s3prl has no downstream configs or
vocabularies: pass ``-c`` from a clone of the s3prl repository and run from its ``s3prl/``
directory, where the configs' relative paths (e.g. ``downstream/ctc/vocab``) resolve; run
from there, the clone's ``downstream/ctc/corpus`` (PR, SF), which the wheel lacks, is used.
For several GPUs: ``torchrun --nproc_per_node N -m s3prl_upstream.run_downstream ...``.

Four differences from s3prl's script, all fixes: SID/ASV file-list caches go to a per-corpus
directory (:mod:`s3prl_upstream.dataset_caches`), the ASV expert runs on CPU too
(:func:`s3prl_upstream.compat.fix_downstream`), checkpoints are written whole or not at all
(:func:`atomic_torch_save`) and at least two are kept (:func:`keep_two_checkpoints`), and
``builtins.isinstance``, which s3prl's main replaces, is restored when it returns.
"""

import builtins
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import torch

import s3prl_upstream  # noqa: F401  (shims and registration before s3prl.run_downstream)
from espnet_mamba.atomic_write import write_atomically
from s3prl_upstream import compat, dataset_caches

# option -> (the only value that works, None where the option cannot be given at all, why). s3prl
# keeps --push_to_hf_hub's value as a string, so even "False" is true to it and uploads.
HUB_OPTIONS = {
    "--hub": ("torch", "s3prl's Hugging Face login uses APIs removed in huggingface_hub 1.0"),
    "--push_to_hf_hub": (None, "s3prl's upload uses huggingface_hub.Repository, removed in huggingface_hub 1.0"),
}


def check_options(argv: List[str]) -> None:
    """Reject Hugging Face Hub options whose s3prl code cannot work with huggingface_hub >= 1."""
    for i, arg in enumerate(argv):
        option, _, value = arg.partition("=")
        if option in HUB_OPTIONS:
            working_value, reason = HUB_OPTIONS[option]
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if working_value is None or value != working_value:
                raise ValueError(f"{option} {value}: {reason}")


def use_clone_ctc_corpus(package_dir: Path) -> bool:
    """Let ``s3prl.downstream.ctc`` import its ``corpus`` modules (missing from the wheel) from
    ``package_dir/downstream/ctc`` of an s3prl clone. Returns whether it was there."""
    clone_ctc = package_dir / "downstream" / "ctc"
    if not (clone_ctc / "corpus").is_dir():
        return False
    import s3prl.downstream.ctc

    if str(clone_ctc) not in s3prl.downstream.ctc.__path__:
        s3prl.downstream.ctc.__path__.append(str(clone_ctc))
    return True


@contextlib.contextmanager
def atomic_torch_save() -> Iterator[None]:
    """``torch.save`` to a path writes a temporary file and renames it, while the context lasts.

    s3prl's runner saves ``states-<step>.ckpt`` and ``dev-best.ckpt`` in place: a kill during the
    write left a torn file, which ``-a`` then failed to resume from (or a torn best model)."""
    save = torch.save

    def save_atomically(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        write_atomically(Path(f), lambda tmp: save(obj, tmp, *args, **kwargs))

    torch.save = save_atomically
    try:
        yield
    finally:
        torch.save = save


def keep_two_checkpoints(config: dict) -> None:
    """Raise ``runner.max_keep`` of a run_downstream config to 2 where it is lower.

    s3prl deletes its oldest ``states-<step>.ckpt`` before it writes the next one: with
    ``max_keep: 1`` a kill during that write leaves no checkpoint to resume from."""
    runner = config["runner"]
    if runner.get("max_keep", 1) < 2:
        logging.warning(
            f"runner.max_keep {runner.get('max_keep')} -> 2: s3prl deletes its last checkpoint "
            "before it writes the next, so with max_keep 1 a kill while it saves leaves none"
        )
        runner["max_keep"] = 2


def _runner_with_fixes(runner_class):
    class Runner(runner_class):
        def __init__(self, args, config):
            dataset_caches.isolate(args.downstream, config)
            compat.fix_downstream(args.downstream)
            keep_two_checkpoints(config)
            super().__init__(args, config)

        def train(self):
            with atomic_torch_save():
                super().train()

    return Runner


def main(argv: Optional[List[str]] = None) -> None:
    """Run s3prl's run_downstream ``main`` with ``argv`` (default: the command line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    check_options(argv)
    compat.require_tensorboardx()
    from s3prl import run_downstream
    from s3prl.downstream.runner import Runner

    use_clone_ctc_corpus(Path.cwd())
    saved_argv, saved_isinstance = sys.argv, builtins.isinstance
    sys.argv = ["run_downstream.py", *argv]
    run_downstream.Runner = _runner_with_fixes(Runner)
    try:
        run_downstream.main()
    finally:
        # s3prl's main replaces builtins.isinstance (a DDP workaround); undo it for callers.
        sys.argv, builtins.isinstance = saved_argv, saved_isinstance
        run_downstream.Runner = Runner


if __name__ == "__main__":
    main()
