"""The whole egs2/mini_an4/ssl1 recipe on CPU, its re-run, resume after a kill, and label checks.

The recipe runs once per test session in a copy of egs2/ (so the checkout stays clean).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from recipe_helpers import copy_recipes, file_stamps, recipe_env

pytestmark = pytest.mark.slow


def _copy_recipe(root: Path) -> Path:
    copy_recipes(root, "mini_an4/ssl1")
    return root / "egs2/mini_an4/ssl1"


def _run(recipe: Path, *args) -> subprocess.CompletedProcess:
    """./run.sh with ``args``; a failure shows the ends of its output."""
    result = subprocess.run(["./run.sh", *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def finished_recipe(tmp_path_factory):
    recipe = _copy_recipe(tmp_path_factory.mktemp("recipe"))
    started = time.time()
    result = _run(recipe)
    return recipe, result, time.time() - started


def test_recipe_ends_with_packed_model(finished_recipe):
    recipe, result, seconds = finished_recipe
    packed = recipe / "packed/mini_an4_mamba_hubert.zip"
    assert packed.exists()
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.endswith(str(packed.resolve())), last_line
    print(f"mini_an4 ssl1 recipe: {seconds:.0f} s")

    from espnet_mamba.espnet.checkpoint import load_pretrained

    model = load_pretrained(packed).eval()
    hidden_states, lengths = model.extract_features(torch.randn(1, 16000))
    assert len(hidden_states) == model.cfg.num_layers + 1 and int(lengths[0]) == 49
    import zipfile

    names = zipfile.ZipFile(packed).namelist()
    assert sum(n.endswith("km.joblib") for n in names) == 2
    assert any(n.endswith("README.md") for n in names)


def test_recipe_stages_wrote_their_outputs(finished_recipe):
    recipe, _, _ = finished_recipe
    for split in ("train", "dev", "test"):
        assert (recipe / f"data/{split}/wav.scp").exists()
        for it in (0, 1):
            assert (recipe / f"dump/labels_iter{it}/{split}/text").exists()
    log0 = (recipe / "exp/ssl_iter0/train.log").read_text()
    assert "6epoch results" in log0


def test_rerun_skips_finished_stages(finished_recipe):
    recipe, _, _ = finished_recipe
    before = file_stamps(recipe)
    result = _run(recipe)
    ran = [line for line in result.stdout.splitlines() if "stage " in line and "skipped" not in line]
    assert not ran, ran
    assert "packed model:" in result.stdout
    assert before and file_stamps(recipe) == before


def test_bad_labels_stop_training_naming_the_utterance(finished_recipe, tmp_path):
    recipe, _, _ = finished_recipe
    broken = tmp_path / "text"
    lines = (recipe / "dump/labels_iter0/train/text").read_text().splitlines()
    victim = lines[1].split()[0]
    broken.write_text("\n".join([lines[0], victim + " 1 2 x 4"] + lines[2:]) + "\n")
    check = [sys.executable, "-m", "espnet_mamba.bin.kmeans", "check", "--wav_scp", "data/train/wav.scp",
             "--labels", str(broken), "--n_clusters", "20"]  # fmt: skip
    result = subprocess.run(check, cwd=recipe, capture_output=True, text=True)
    assert result.returncode != 0 and victim in result.stderr
    broken.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # one utterance missing
    result = subprocess.run(check, cwd=recipe, capture_output=True, text=True)
    assert result.returncode != 0 and victim in result.stderr and "no labels" in result.stderr


def test_killed_training_resumes_from_last_checkpoint(finished_recipe, tmp_path):
    source, _, _ = finished_recipe
    recipe = tmp_path / "egs2/mini_an4/ssl1"
    shutil.copytree(source.parents[1], tmp_path / "egs2", symlinks=True)
    shutil.rmtree(recipe / "exp")
    (recipe / "packed/mini_an4_mamba_hubert.zip").unlink()
    out = recipe / "exp/ssl_iter0"
    proc = subprocess.Popen(
        ["./run.sh", "--stage", "4", "--stop_stage", "4"], cwd=recipe, env=recipe_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and "2epoch results" not in _read(out / "train.log"):
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-epoch 3
    proc.wait()
    assert "2epoch results" in _read(out / "train.log") and "6epoch results" not in _read(out / "train.log")
    assert not (out / ".done").exists()
    _run(recipe, "--stage", "4", "--stop_stage", "4")
    log = _read(out / "train.log")
    assert "The training was resumed using" in log
    assert log.count("1epoch results") == 1  # epochs 1-2 were not trained again
    assert "6epoch results" in log and (out / ".done").exists()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
