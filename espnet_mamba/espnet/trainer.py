"""ESPnet's trainer, with checkpoints that survive a kill while they are being written.

ESPnet saves ``checkpoint.pth`` and ``{epoch}epoch.pth`` in place at the end of each epoch. A kill
during the first write leaves a torn checkpoint, and the previous epoch's is already overwritten,
so ``--resume true`` stops with an unreadable file. A kill before or during the second leaves the
epoch model missing or torn, and the final n-best averaging, which reads it, fails.

:class:`ResumableTrainer` keeps a copy of the last checkpoint while an epoch trains
(``checkpoint.prev.pth``, written under a temporary name and renamed; removed when training
ends). It resumes from that copy when ``checkpoint.pth`` is torn (the interrupted epoch is
trained again), writes a missing or torn epoch model from the checkpoint it resumes, and links
``latest.pth`` and the best models to it as ESPnet does after saving it. A torn file is one
that ``torch.save`` did not finish: a kill leaves it without the zip directory, which is
written last; an exception inside ``torch.save`` (a full disk) leaves a closed archive that
lacks the records after the failed one.

It also tells each Mamba-HuBERT encoder ESPnet's ``accum_grad`` and, on resume, the batches
already trained, by which its ``freeze_encoder_steps`` count.
"""

import logging
import pickle
import shutil
import zipfile
from pathlib import Path

import torch
from espnet2.train.trainer import Trainer

from espnet_mamba.atomic_write import write_atomically
from espnet_mamba.espnet.encoder import MambaHuBERTEncoder

CHECKPOINT = "checkpoint.pth"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pth"


def _is_complete(path: Path) -> bool:
    """Whether ``torch.save`` finished writing ``path``: it is a zip archive (the directory is
    written last) that holds every record its pickle refers to. The records are mapped, not read."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError:  # an object weights_only refuses: ESPnet's resume says so itself
        return True
    except RuntimeError:  # "PytorchStreamReader failed locating file data/N"
        return False
    return True


def keep_previous_checkpoint(output_dir: Path) -> None:
    """Copy ``checkpoint.pth`` to ``checkpoint.prev.pth`` before ESPnet overwrites it in place."""
    checkpoint = output_dir / CHECKPOINT
    if _is_complete(checkpoint):
        write_atomically(output_dir / PREVIOUS_CHECKPOINT, lambda tmp: shutil.copyfile(checkpoint, tmp))


class ResumableTrainer(Trainer):
    """ESPnet's :class:`~espnet2.train.trainer.Trainer` whose resume survives torn checkpoints."""

    best_model_criterion = ()  # of the run: resume links the best models by it

    @classmethod
    def run(cls, *, trainer_options, distributed_option, **kwargs) -> None:
        cls.best_model_criterion = trainer_options.best_model_criterion
        super().run(trainer_options=trainer_options, distributed_option=distributed_option, **kwargs)
        if not distributed_option.distributed or distributed_option.dist_rank == 0:
            (Path(trainer_options.output_dir) / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)

    @classmethod
    def train_one_epoch(cls, *, model, options, distributed_option, **kwargs) -> bool:
        if not distributed_option.distributed or distributed_option.dist_rank == 0:
            keep_previous_checkpoint(Path(options.output_dir))
        for encoder in _mamba_hubert_encoders(model):  # its freeze_encoder_steps count updates
            encoder.batches_per_update = options.accum_grad
        return super().train_one_epoch(model=model, options=options, distributed_option=distributed_option, **kwargs)

    @classmethod
    def resume(cls, checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu=0, strict=True) -> None:
        checkpoint = Path(checkpoint)
        if not _is_complete(checkpoint):
            previous = checkpoint.with_name(PREVIOUS_CHECKPOINT)
            if not _is_complete(previous):
                logging.warning(
                    f"{checkpoint} is torn (a kill or an error cut its save short) and there is no earlier "
                    f"{PREVIOUS_CHECKPOINT}: training starts again from epoch 1"
                )
                return
            logging.warning(f"{checkpoint} is torn (a kill or an error cut its save short): resuming from {previous}")
            checkpoint = previous
        Trainer.resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu=ngpu, strict=strict)
        trained = reporter.stats.get(reporter.get_epoch(), {}).get("train", {}).get("total_count", 0)
        for encoder in _mamba_hubert_encoders(model):  # where its freeze_encoder_steps left off
            encoder.trained_batches = trained
        epoch_model = checkpoint.parent / f"{reporter.get_epoch()}epoch.pth"
        writes_files = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        # with ESPnet's adapters (strict=False) an epoch model may hold part of the model: left as it is
        if writes_files and strict and not _is_complete(epoch_model):
            logging.warning(f"{epoch_model} is missing or torn: written from {checkpoint}")
            write_atomically(epoch_model, lambda tmp: torch.save(model.state_dict(), tmp))
        if writes_files:
            _link_epoch_model(epoch_model, reporter, cls.best_model_criterion)


def _link_epoch_model(epoch_model: Path, reporter, best_model_criterion) -> None:
    """``latest.pth``, and ``{phase}.{key}.best.pth`` where its epoch is the best, linked to the
    model of the reporter's last epoch, as ESPnet links them after saving it: a kill between
    that save and the links would leave them at an earlier epoch."""
    epoch, links = reporter.get_epoch(), ["latest.pth"]
    for phase, key, mode in best_model_criterion:
        if reporter.has(phase, key) and reporter.get_best_epoch(phase, key, mode) == epoch:
            links.append(f"{phase}.{key}.best.pth")
    for name in links:
        link = epoch_model.with_name(name)
        if not (link.is_symlink() and link.readlink() == Path(epoch_model.name)):
            link.unlink(missing_ok=True)
            link.symlink_to(epoch_model.name)


def _mamba_hubert_encoders(model: torch.nn.Module):
    return [module for module in model.modules() if isinstance(module, MambaHuBERTEncoder)]
