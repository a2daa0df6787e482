"""The whole egs2/mini_an4/asr1 recipe on CPU: fine-tuning of a packed SSL model (a tiny
random one placed where ../ssl1 leaves its zip), offline and streaming decoding, RESULTS.md,
the packed model read back by Speech2Text, and a re-run that skips every finished stage.

The recipe runs once per module in a copy of egs2/ (so the checkout stays clean), with
``--train_args "--max_epoch 2"`` to keep it short.
"""

import subprocess
import time
from pathlib import Path

import pytest
import soundfile
import yaml
from recipe_helpers import copy_recipes, file_stamps, recipe_env

pytestmark = pytest.mark.slow


def _copy_recipe(root: Path) -> Path:
    copy_recipes(root, "mini_an4/ssl1", "mini_an4/asr1")
    return root / "egs2/mini_an4/asr1"


def _pack_random_ssl_model(ssl_recipe: Path) -> Path:
    """A packed SSL model of ../ssl1's architecture, random weights, where run.sh looks."""
    import torch
    from espnet2.bin.pack import main as pack

    from espnet_mamba.espnet.tasks import MambaSSLTask

    work = ssl_recipe / "exp/random"
    tokens = ssl_recipe / "tokens.txt"
    tokens.write_text("".join(f"{i}\n" for i in range(20)) + "<unk>\n")
    MambaSSLTask.main(cmd=[
        "--config", str(ssl_recipe / "conf/train_ssl_iter1.yaml"), "--dry_run", "true", "--iterator_type",
        "none", "--output_dir", str(work), "--token_list", str(tokens), "--token_type", "word",
    ])  # fmt: skip
    torch.manual_seed(0)
    model, _ = MambaSSLTask.build_model_from_file(work / "config.yaml", None, "cpu")
    torch.save(model.state_dict(), work / "valid.loss.best.pth")
    packed = ssl_recipe / "packed/mini_an4_mamba_hubert.zip"
    pack(["ssl", "--ssl_train_config", str(work / "config.yaml"), "--ssl_model_file",
          str(work / "valid.loss.best.pth"), "--outpath", str(packed)])  # fmt: skip
    return packed


def _run(recipe: Path, *args):
    return subprocess.run(["./run.sh", *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True)


@pytest.fixture(scope="module")
def finished_recipe(tmp_path_factory):
    recipe = _copy_recipe(tmp_path_factory.mktemp("recipe"))
    ssl_zip = _pack_random_ssl_model(recipe.parent / "ssl1")
    started = time.time()
    result = _run(recipe, "--train_args", "--max_epoch 2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return recipe, ssl_zip, result, time.time() - started


def test_recipe_fine_tunes_decodes_scores_and_packs(finished_recipe):
    recipe, ssl_zip, result, seconds = finished_recipe
    print(f"mini_an4 asr1 recipe: {seconds:.0f} s")
    packed = recipe / "packed/mini_an4_mamba_hubert_asr.zip"
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.endswith(f"packed model: {packed.resolve()}"), last_line

    exp = recipe / "exp/asr"
    config = yaml.safe_load((exp / "config.yaml").read_text())
    assert config["init_param"][0].endswith(":encoder:encoder")  # fine-tuned from the SSL zip
    assert "pretrained" not in config["encoder_conf"] and config["model_conf"]["ctc_weight"] == 1.0
    for hyp in ("decode_offline/test/text", "decode_stream/test/text", "decode_stream/test/hyp_stream.trn",
                "decode_stream/test/stream_stats.json"):  # fmt: skip
        assert (exp / hyp).exists(), hyp
    results = (recipe / "RESULTS.md").read_text()
    assert "| offline | 2 | 10 |" in results and "| streaming | 2 | 10 |" in results
    assert '"token_delay_ms_median"' in results and str(ssl_zip.relative_to(recipe.parent / "ssl1")) in results


def test_packed_model_transcribes_with_speech2text(finished_recipe, tmp_path):
    recipe, _, _, _ = finished_recipe
    import espnet_mamba.espnet.tasks  # noqa: F401  (registers mamba_hubert)
    from espnet2.bin.asr_inference import Speech2Text
    from espnet_model_zoo.downloader import ModelDownloader

    files = ModelDownloader(tmp_path).download_and_unpack(str(recipe / "packed/mini_an4_mamba_hubert_asr.zip"))
    card = Path(files["asr_train_config"]).parent / "README.md"
    assert "## Results" in card.read_text() and "| offline |" in card.read_text()
    options = dict(ctc_weight=1.0, beam_size=2, lm_weight=0.0)
    wav_path = (recipe / "data/test/wav.scp").read_text().split()[1]
    wav, rate = soundfile.read(wav_path)
    packed = Speech2Text(**files, **options)(wav)[0]
    # the experiment's own best model, decoded the same way, gives the same hypothesis
    exp = recipe / "exp/asr"
    best = next(exp / n for n in ("valid.acc.best.pth", "valid.loss.best.pth", "latest.pth") if (exp / n).exists())
    unpacked = Speech2Text(asr_train_config=str(exp / "config.yaml"), asr_model_file=str(best), **options)(wav)[0]
    assert rate == 16000 and packed[0] == unpacked[0] and packed[2] == unpacked[2]  # text and token ids


def test_rerun_skips_finished_stages(finished_recipe):
    recipe, _, _, _ = finished_recipe
    before = file_stamps(recipe)
    again = _run(recipe)
    assert again.returncode == 0, again.stderr[-3000:]
    ran = [line for line in again.stdout.splitlines() if "stage " in line and "skipped" not in line]
    assert not ran, ran
    assert again.stdout.strip().splitlines()[-1].endswith("packed/mini_an4_mamba_hubert_asr.zip")
    assert before and file_stamps(recipe) == before
