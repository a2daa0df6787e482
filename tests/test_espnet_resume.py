"""ResumableTrainer: ESPnet SSL training whose checkpoint save was cut short resumes.

A tiny model trains two epochs on noise with fixed labels; each test copies that run, tears a
file as a kill during ``torch.save`` would (the file cut short) or as an error inside it would
(a closed archive without its last tensors), and trains again.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from conftest import TINY_CNN

from espnet_mamba.espnet.trainer import CHECKPOINT, PREVIOUS_CHECKPOINT, keep_previous_checkpoint

REPO = Path(__file__).resolve().parents[1]
N_CLUSTERS = 20
FRAMES = 49  # of one second at 16 kHz, after the 320x CNN


def _write_data(root: Path) -> list:
    """Five one-second noise utterances with random labels; the data options of ssl_train."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    with open(root / "wav.scp", "w") as scp, open(root / "text", "w") as text, open(root / "shape", "w") as shape:
        for i in range(5):
            wav = root / f"wav/u{i}.wav"
            soundfile.write(wav, 0.1 * rng.standard_normal(16000), 16000)
            scp.write(f"u{i} {wav}\n")
            text.write(f"u{i} " + " ".join(map(str, rng.integers(0, N_CLUSTERS, FRAMES))) + "\n")
            shape.write(f"u{i} 16000\n")
    (root / "tokens.txt").write_text("".join(f"{i}\n" for i in range(N_CLUSTERS)) + "<unk>\n")
    data = []
    for split in ("train", "valid"):
        data += [f"--{split}_data_path_and_name_and_type", f"{root}/wav.scp,speech,sound",
                 f"--{split}_data_path_and_name_and_type", f"{root}/text,text,text",
                 f"--{split}_shape_file", f"{root}/shape"]  # fmt: skip
    return data + ["--token_list", str(root / "tokens.txt"), "--token_type", "word", "--use_preprocessor", "true"]


def _train(out: Path, max_epoch: int) -> str:
    """ssl_train into ``out`` with --resume true, in its own process; its log."""
    cmd = [sys.executable, "-m", "espnet_mamba.bin.ssl_train", "--config", str(out.parent / "config.yaml"),
           "--output_dir", str(out), "--max_epoch", str(max_epoch), "--resume", "true",
           *(out.parent / "data_args").read_text().split("\n")]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="2")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    config = yaml.safe_load((REPO / "egs2/mini_an4/ssl1/conf/train_ssl_iter0.yaml").read_text())
    config["encoder_conf"].update(conv_layers=[list(layer) for layer in TINY_CNN], ssm_impl="torch")
    config.update(keep_nbest_models=2, use_tensorboard=False)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "data_args").write_text("\n".join(_write_data(root / "data")))
    _train(root / "exp", max_epoch=2)
    return root


@pytest.fixture
def run_copy(two_epochs, tmp_path):
    """A copy of the two-epoch run (its config and data options beside it)."""
    for name in ("config.yaml", "data_args"):
        shutil.copy(two_epochs / name, tmp_path / name)
    shutil.copytree(two_epochs / "exp", tmp_path / "exp", symlinks=True)
    return tmp_path / "exp"


def _tear(path: Path) -> None:
    """Cut ``path`` to half its size, as a kill during its ``torch.save`` leaves it."""
    os.truncate(path, path.stat().st_size // 2)


def _break_off_save(path: Path) -> None:
    """Save ``path`` again with its second tensor's write failing, as on a full disk: torch.save
    raises, and the archive it closes on the way out lacks that tensor and those after it."""
    states = torch.load(path, map_location="cpu", weights_only=True)
    write_record = torch._C.PyTorchFileWriter.write_record

    def fail_at_second_tensor(writer, name, *args):
        if name.endswith("data/1"):
            raise OSError(28, "No space left on device")
        return write_record(writer, name, *args)

    torch._C.PyTorchFileWriter.write_record = fail_at_second_tensor
    try:
        with pytest.raises(OSError, match="No space left"):
            torch.save(states, path)
    finally:
        torch._C.PyTorchFileWriter.write_record = write_record
    assert zipfile.is_zipfile(path)  # a readable directory: only the missing records tell


def _epoch(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["reporter"]["epoch"]


def test_finished_run_leaves_one_checkpoint(two_epochs):
    out = two_epochs / "exp"
    assert _epoch(out / CHECKPOINT) == 2
    assert not (out / PREVIOUS_CHECKPOINT).exists()


def test_training_checkpoints_are_not_taken_for_a_model(run_copy):
    from espnet_mamba.espnet.checkpoint import load_pretrained

    for path in run_copy.glob("*.pth"):
        if path.name != CHECKPOINT:
            path.unlink()
    keep_previous_checkpoint(run_copy)
    with pytest.raises(FileNotFoundError, match="no model .pth"):
        load_pretrained(run_copy)


@pytest.mark.parametrize("damage", [_tear, _break_off_save])
def test_torn_checkpoint_resumes_from_the_previous_one(run_copy, damage):
    keep_previous_checkpoint(run_copy)  # as at the start of epoch 3
    assert _epoch(run_copy / PREVIOUS_CHECKPOINT) == 2
    damage(run_copy / CHECKPOINT)  # killed, or failed, while epoch 3 was saved
    log = _train(run_copy, max_epoch=3)
    assert f"{run_copy / CHECKPOINT} is torn" in log
    assert f"The training was resumed using {run_copy / PREVIOUS_CHECKPOINT}" in log
    assert "3epoch results" in log and "2epoch results" not in log
    assert _epoch(run_copy / CHECKPOINT) == 3 and not (run_copy / PREVIOUS_CHECKPOINT).exists()


def test_torn_first_checkpoint_trains_from_the_start(run_copy):
    _tear(run_copy / CHECKPOINT)
    log = _train(run_copy, max_epoch=2)
    assert f"no earlier {PREVIOUS_CHECKPOINT}: training starts again from epoch 1" in log
    assert "1epoch results" in log and _epoch(run_copy / CHECKPOINT) == 2


@pytest.mark.parametrize("damage", [_tear, _break_off_save, Path.unlink])
def test_torn_or_missing_epoch_model_is_written_from_the_checkpoint(run_copy, damage):
    epoch_model = run_copy / "2epoch.pth"
    damage(epoch_model)  # killed after checkpoint.pth, while or before 2epoch.pth was saved
    log = _train(run_copy, max_epoch=2)  # nothing left to train; the n-best average reads 2epoch.pth
    assert f"{epoch_model} is missing or torn: written from {run_copy / CHECKPOINT}" in log
    saved = torch.load(epoch_model, map_location="cpu", weights_only=True)
    expected = torch.load(run_copy / CHECKPOINT, map_location="cpu", weights_only=True)["model"]
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)


def test_links_to_the_epoch_model_are_made_again_on_resume(run_copy):
    """Killed after 2epoch.pth was saved and before ESPnet linked latest.pth and the best models
    to it: the resume links them as the finished run had."""
    links = {p.name: p.readlink() for p in run_copy.glob("*.pth") if p.is_symlink()}
    assert links["latest.pth"] == Path("2epoch.pth") and len(links) > 1
    for name, target in links.items():
        if target == Path("2epoch.pth"):
            (run_copy / name).unlink()
            (run_copy / name).symlink_to("1epoch.pth")
    _train(run_copy, max_epoch=2)
    assert {p.name: p.readlink() for p in run_copy.glob("*.pth") if p.is_symlink()} == links
