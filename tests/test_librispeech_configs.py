"""egs2/librispeech/ssl1 without LibriSpeech: every pretraining config (14 presets x 2
iterations) passes ESPnet's parser and builds its model (on the meta device), optimizer and
scheduler with the papers' schedule, and passes ESPnet's ``--dry_run`` (CPU model); the default
config also through ``python -m espnet_mamba.bin.ssl_train --dry_run`` in a process of its own;
run.sh hands the right options to ssl.sh; local/data.sh writes the data dirs from a copy of the
corpus and fails clearly when it can neither find nor fetch it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from espnet2.tasks.abs_task import scheduler_classes

import espnet_mamba
from espnet_mamba.espnet.tasks import MambaSSLTask
from espnet_mamba.kmeans import write_token_list

from recipe_helpers import copy_recipes, load_script, recipe_env

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs2/librispeech/ssl1"
CONFIGS = sorted((RECIPE / "conf/tuning").glob("train_ssl_iter*.yaml"))
SCHEDULE = {0: (100, 250_000), 1: (500, 400_000)}  # iteration: (clusters, updates)
SECONDS_PER_UPDATE = 700
PARTS = "train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other".split()


def iteration_and_preset(config: Path):
    match = re.fullmatch(r"train_ssl_iter(\d)_(\w+)", config.stem)
    assert match, config
    return int(match.group(1)), match.group(2)


@pytest.fixture(scope="module")
def token_lists(tmp_path_factory):
    """The token lists the k-means stage writes: {clusters: path}."""
    root = tmp_path_factory.mktemp("tokens")
    paths = {}
    for clusters, _ in SCHEDULE.values():
        paths[clusters] = root / f"tokens_{clusters}.txt"
        write_token_list(clusters, paths[clusters])
    return paths


def test_every_preset_has_both_iterations():
    found = {iteration_and_preset(c) for c in CONFIGS}
    assert found == {(it, p) for p in espnet_mamba.list_presets() for it in SCHEDULE}
    for it in SCHEDULE:  # the default configs: mamba_base
        link = RECIPE / f"conf/train_ssl_iter{it}.yaml"
        assert link.is_symlink() and link.resolve() == RECIPE / f"conf/tuning/train_ssl_iter{it}_mamba_base.yaml"


def test_configs_are_what_the_generator_writes():
    make_configs = load_script(RECIPE / "local/make_configs.py")
    for config in CONFIGS:
        it, preset = iteration_and_preset(config)
        assert config.read_text() == make_configs.render(preset, it), f"re-run local/make_configs.py ({config.name})"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_builds_model_optimizer_scheduler(config, token_lists, tmp_path):
    it, preset = iteration_and_preset(config)
    clusters, updates = SCHEDULE[it]
    tokens = token_lists[clusters]
    args = MambaSSLTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", str(tokens), "--output_dir", str(tmp_path)]
    )
    assert (args.model, args.encoder, args.input_size, args.normalize, args.preencoder) == (
        "mamba_hubert", "mamba_hubert", 1, None, None,
    )  # fmt: skip
    assert args.encoder_conf == {"preset": preset, "recompute_cnn": True, "compile_cnn": False}
    # the schedule: updates = mini-batches / accum_grad; 700 s of audio per update
    assert args.num_iters_per_epoch * args.max_epoch // args.accum_grad == updates
    assert args.batch_type == "numel" and args.batch_bins == SECONDS_PER_UPDATE * 16000
    assert args.use_amp and args.grad_clip == 10.0 and args.optim == "adamw" and args.exclude_weight_decay
    assert args.util == [{"name": "mask", "conf": {"mask_prob": 0.8, "mask_length": 10}}]
    assert args.loss[0]["conf"]["final_dim"] == 256

    with torch.device("meta"):  # shapes only: no time spent initialising 100M+ parameters
        model = MambaSSLTask.build_model(args)
    n_tokens = len(tokens.read_text().split())
    assert n_tokens == clusters + 1
    assert model.losses[0].decoder.label_embeddings.out_features == n_tokens
    assert model.encoder.backbone.cfg == espnet_mamba.load_config(preset, recompute_cnn=True)
    assert len(model.encoder.encoders) == 12

    (optimizer,) = MambaSSLTask.build_optimizers(args, model)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay) == sum(1 for _ in model.parameters())
    norms = {id(p) for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))
             for p in m.parameters(recurse=False)}  # fmt: skip
    for name, p in model.named_parameters():  # Mamba's A_log, D (and InnBiMamba's A_b_log, D_b), biases, norms
        no_decay = re.search(r"\.(A(_b)?_log|D(_b)?|bias)$", name) or id(p) in norms
        assert decay[id(p)] == (0.0 if no_decay else 0.01), name

    scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)

    def lr_at(update):  # the learning rate of update number `update` (1-based)
        scheduler.last_epoch = update - 1
        return scheduler.get_lr()[0]

    peak = args.optim_conf["lr"]
    assert lr_at(1) < peak / 1000 and lr_at(16_000) == pytest.approx(peak / 2)
    assert lr_at(32_000) == pytest.approx(peak)
    assert lr_at(updates // 2 + 16_000) == pytest.approx(peak / 2)
    assert lr_at(updates) == 0.0 and lr_at(updates + 10_000) == 0.0


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_passes_espnet_dry_run(config, token_lists, tmp_path):
    """ESPnet's own check: parse, build the model on CPU with its initialisation, optimizer and
    scheduler, write config.yaml (about a second per Base config)."""
    it, preset = iteration_and_preset(config)
    clusters, _ = SCHEDULE[it]
    out = tmp_path / "exp"
    MambaSSLTask.main(cmd=[
        "--config", str(config), "--dry_run", "true", "--iterator_type", "none",
        "--token_list", str(token_lists[clusters]), "--output_dir", str(out),
    ])  # fmt: skip
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["token_list"] == [str(i) for i in range(clusters)] + ["<unk>"]
    assert written["encoder_conf"]["preset"] == preset


def test_ssl_train_dry_run_subprocess(token_lists, tmp_path):
    """ESPnet's own check of a config, in a process of its own, the way ssl.sh calls the trainer."""
    config = RECIPE / "conf/train_ssl_iter0.yaml"
    out = tmp_path / "exp"
    result = subprocess.run(
        [sys.executable, "-m", "espnet_mamba.bin.ssl_train", "--config", str(config), "--dry_run", "true",
         "--iterator_type", "none", "--token_list", str(token_lists[100]), "--output_dir", str(out)],
        env=recipe_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["token_list"] == [str(i) for i in range(100)] + ["<unk>"]
    assert written["encoder_conf"]["preset"] == "mamba_base"
    assert "PiecewiseLinearWarmupLR" in result.stderr


def _copy_recipe(root: Path) -> Path:
    """egs2/TEMPLATE, this recipe and the one whose local/prepare_librispeech.py it links to."""
    copy_recipes(root, "librispeech/ssl1", "librispeech_100/asr1")
    return root / "egs2/librispeech/ssl1"


@pytest.fixture
def recipe_with_stub(tmp_path):
    """The recipe with an ssl.sh that only prints its arguments, one per line."""
    recipe = _copy_recipe(tmp_path)
    stub = recipe / "ssl.sh"
    stub.unlink()
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\necho "LIBRISPEECH_ROOT=${LIBRISPEECH_ROOT}"\n')
    stub.chmod(0o755)
    return recipe


def _ssl_options(output: str):
    """The stub's output -> ({option: last value}, {option: [values]}, LIBRISPEECH_ROOT line)."""
    lines = output.splitlines()
    root = lines.pop()
    options = {}
    for name, value in zip(lines[::2], lines[1::2]):
        assert name.startswith("--"), lines
        options.setdefault(name[2:], []).append(value)
    return {k: v[-1] for k, v in options.items()}, options, root


def test_run_sh_passes_preset_schedule_and_distribution(recipe_with_stub):
    result = subprocess.run(
        ["./run.sh", "--preset", "extbimamba_small", "--ngpu=8", "--num_nodes", "2", "--node_rank", "1",
         "--dist_init_method", "tcp://host0:23456", "--accum_grad", "2", "--stage", "4",
         "--train_args", "--num_workers 2", "--librispeech_root", "/corpus", "--feature_device", "cpu"],
        cwd=recipe_with_stub, env=recipe_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    last, every, root = _ssl_options(result.stdout)
    assert last["train_config_iter0"] == "conf/tuning/train_ssl_iter0_extbimamba_small.yaml"
    assert last["train_config_iter1"] == "conf/tuning/train_ssl_iter1_extbimamba_small.yaml"
    assert (last["n_clusters_iter0"], last["n_clusters_iter1"], last["feature_layer"]) == ("100", "500", "6")
    assert (last["train_set"], last["valid_set"], last["test_sets"]) == ("train_960", "dev", "test_clean test_other")
    assert (last["ngpu"], last["num_nodes"], last["dist_init_method"]) == ("8", "2", "tcp://host0:23456")
    assert last["stage"] == "4" and last["expdir"] == "exp/extbimamba_small"
    assert every["feature_device"] == ["cuda", "cpu"]  # the user's option comes last, so it wins
    assert last["analysis_device"] == "cuda"
    assert last["train_args"].split() == [
        "--accum_grad", "2", "--batch_bins", str(SECONDS_PER_UPDATE * 16000 // 2), "--num_iters_per_epoch", "10000",
        "--dist_rank", "1", "--num_workers", "2",
    ]  # fmt: skip
    assert root == "LIBRISPEECH_ROOT=/corpus"
    # iteration 0's targets are shared by every preset
    assert os.readlink(recipe_with_stub / "dump/extbimamba_small/labels_iter0") == "../shared/labels_iter0"


def test_run_sh_refuses_unknown_preset_and_missing_node_rank(recipe_with_stub):
    for args, message in (
        (["--preset", "mamba_huge"], "no configs for preset 'mamba_huge'"),
        (["--ngpu", "8", "--num_nodes", "2", "--dist_init_method", "tcp://h:1"], "needs --node_rank"),
    ):
        env = {k: v for k, v in recipe_env().items() if k != "RANK"}
        result = subprocess.run(["./run.sh", *args], cwd=recipe_with_stub, env=env, capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def _fake_librispeech(root: Path) -> Path:
    """A LibriSpeech/ tree: every part, one speaker and chapter, two 0.5 s FLAC utterances."""
    corpus = root / "LibriSpeech"
    rng = np.random.default_rng(0)
    for i, part in enumerate(PARTS):
        chapter = corpus / part / str(100 + i) / "7"
        chapter.mkdir(parents=True)
        lines = []
        for u in range(2):
            utt = f"{100 + i}-7-{u:04d}"
            soundfile.write(chapter / f"{utt}.flac", 0.1 * rng.standard_normal(8000), 16000)
            lines.append(f"{utt} SOME WORDS {u}\n")
        (chapter / f"{100 + i}-7.trans.txt").write_text("".join(lines))
    return corpus


def _data_sh(recipe, *args):
    return subprocess.run(["./local/data.sh", *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True)


def _check_data_dirs(recipe: Path, corpus: Path):
    expected = {"train_960": PARTS[:3], "dev": PARTS[3:5], "test_clean": PARTS[5:6], "test_other": PARTS[6:]}
    for dset, parts in expected.items():
        out = recipe / "data" / dset
        wav_scp = dict(line.split(" ", 1) for line in (out / "wav.scp").read_text().splitlines())
        assert len(wav_scp) == 2 * len(parts)
        for path in wav_scp.values():
            assert Path(path).is_absolute() and Path(path).suffix == ".flac"
            assert Path(path).resolve().is_relative_to(corpus.resolve()) and Path(path).parts[-4] in parts
            assert soundfile.info(path).samplerate == 16000
        assert set(wav_scp) == {line.split()[0] for line in (out / "text").read_text().splitlines()}
        utt2spk = dict(line.split() for line in (out / "utt2spk").read_text().splitlines())
        spk2utt = {line.split()[0]: line.split()[1:] for line in (out / "spk2utt").read_text().splitlines()}
        assert set(utt2spk) == set(wav_scp) and sorted(u for us in spk2utt.values() for u in us) == sorted(utt2spk)


def test_data_sh_uses_an_existing_copy(tmp_path):
    recipe = _copy_recipe(tmp_path / "a")
    corpus = _fake_librispeech(tmp_path / "corpus")
    for root in (corpus.parent, corpus):  # the folder holding LibriSpeech/, or LibriSpeech/ itself
        result = _data_sh(recipe, "--librispeech_root", str(root))
        assert result.returncode == 0, result.stderr
        _check_data_dirs(recipe, corpus)
    assert not (recipe / "downloads").exists()
    shutil.rmtree(corpus / "test-other")
    result = _data_sh(recipe, "--librispeech_root", str(corpus))
    assert result.returncode != 0 and "no folder for test-other" in result.stderr


def test_data_sh_offline(tmp_path):
    """No corpus and no network: a clear error. Archives put in downloads/ are unpacked."""
    recipe = _copy_recipe(tmp_path / "a")
    offline = ("--url", "http://127.0.0.1:9/resources/12")  # nothing listens on port 9
    result = _data_sh(recipe, *offline)
    assert result.returncode != 0
    assert "cannot fetch http://127.0.0.1:9/resources/12/train-clean-100.tar.gz" in result.stderr
    assert "--librispeech_root" in result.stderr

    corpus = _fake_librispeech(tmp_path / "corpus")
    for part in PARTS:
        subprocess.run(["tar", "-czf", str(recipe / f"downloads/{part}.tar.gz"), "-C", str(corpus.parent),
                        f"LibriSpeech/{part}"], check=True)  # fmt: skip
    result = _data_sh(recipe, *offline)
    assert result.returncode == 0, result.stderr
    assert "unpacking downloads/dev-other.tar.gz as it is" in result.stdout
    _check_data_dirs(recipe, recipe / "downloads/LibriSpeech")
    again = _data_sh(recipe, *offline)  # unpacked parts are neither fetched nor unpacked again
    assert again.returncode == 0 and "fetching" not in again.stdout and "unpacking" not in again.stdout
