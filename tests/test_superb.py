"""SUPERB downstream tasks through run_downstream on tiny synthetic corpora, result
collection and SUPERB_S."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
import yaml
from lxml import etree

import espnet_mamba
from conftest import TINY_CNN
from espnet_mamba.espnet.checkpoint import save_pretrained
from s3prl_upstream import dataset_caches, run_downstream, superb, toy_corpora
from s3prl_upstream.superb_data import write_length_tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = espnet_mamba.build_model("mamba_small", d_model=32, num_layers=2, ssm_impl="torch", conv_layers=TINY_CNN)
    save_pretrained(model, path)
    return path


@pytest.fixture(autouse=True)
def private_dataset_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(dataset_caches.CACHE_ENV, str(tmp_path / "s3prl_cache"))


def toy_task(task, root):
    """Toy corpus + config file of a task; returns the config path."""
    config = toy_corpora.make(task, root / "corpus")
    path = root / "config.yaml"
    toy_corpora.write_config(config, path)
    return path


def train(ckpt, task, root, capsys, *extra):
    """run_downstream -m train on the toy corpus of ``task``; returns (expdir, stdout)."""
    expdir = root / "exp"
    downstream = superb.TASKS[task].downstream
    run_downstream.main(
        ["-m", "train", "-u", "mamba_hubert", "-k", str(ckpt), "-d", downstream, "-c", str(toy_task(task, root)),
         "-p", str(expdir), "--device", "cpu", *extra]
    )  # fmt: skip
    return expdir, capsys.readouterr().out


def evaluate(checkpoint, split, capsys):
    run_downstream.main(["-m", "evaluate", "-e", str(checkpoint), "-t", split, "--device", "cpu"])
    return capsys.readouterr().out


# --- tasks through run_downstream --------------------------------------------------------


def test_ks_trains_evaluates_and_resumes(tiny_ckpt, tmp_path, capsys, monkeypatch):
    written = []
    write = run_downstream.write_atomically
    monkeypatch.setattr(run_downstream, "write_atomically", lambda path, f: (written.append(path.name), write(path, f)))
    expdir, out = train(tiny_ckpt, "KS", tmp_path, capsys, "-o", "config.runner.max_keep=1")
    assert "dev acc:" in out
    assert {"states-2.ckpt", "states-4.ckpt", "dev-best.ckpt"} <= set(written)  # the runner's saves, atomic
    # max_keep raised to 2: s3prl would delete its only checkpoint before writing the next
    assert sorted(p.name for p in expdir.glob("states-*")) == ["states-2.ckpt", "states-4.ckpt"]
    test_out = evaluate(expdir / "states-4.ckpt", "test", capsys)
    assert superb.TASKS["KS"].metrics[0].read(test_out, "test")
    assert len((expdir / "test_predict.txt").read_text().splitlines()) == 4  # yes, no, _unknown_, _silence_
    run_downstream.main(["-m", "train", "-e", str(expdir), "-o", "config.runner.total_steps=6", "--device", "cpu"])
    assert sorted(p.name for p in expdir.glob("states-*")) == ["states-4.ckpt", "states-6.ckpt"]
    assert torch.load(expdir / "states-6.ckpt", map_location="cpu")["Step"] == 6


@pytest.mark.parametrize("task", ["SID", "IC", "ER"])
def test_utterance_classification_tasks_train_and_test(tiny_ckpt, tmp_path, capsys, task):
    expdir, out = train(tiny_ckpt, task, tmp_path, capsys)
    assert "dev acc:" in out
    test_out = evaluate(expdir / "states-4.ckpt", "test", capsys)
    metric = superb.TASKS[task].metrics[0]
    [accuracy] = metric.read(test_out, "test")
    assert 0 <= accuracy <= 100


def test_sid_file_lists_are_cached_outside_the_s3prl_package(tiny_ckpt, tmp_path, capsys):
    import s3prl.downstream.voxceleb1 as sid_package

    train(tiny_ckpt, "SID", tmp_path, capsys)
    assert sorted(p.name for p in (tmp_path / "s3prl_cache" / "voxceleb1").rglob("*.pkl")) == [
        "dev.pkl", "test.pkl", "train.pkl"
    ]  # fmt: skip
    assert not (Path(sid_package.__file__).parent / ".cache").exists()


def test_asr_trains_and_reports_wer(tiny_ckpt, tmp_path, capsys):
    expdir, out = train(tiny_ckpt, "ASR", tmp_path, capsys)
    assert "dev-clean wer:" in out
    test_out = evaluate(expdir / "states-4.ckpt", "test-clean", capsys)
    metric = superb.TASKS["ASR"].metrics[0]
    assert metric.read(test_out, "test")
    assert len((expdir / "test-clean-noLM-hyp.ark").read_text().splitlines()) == len(toy_corpora.LIBRISPEECH_TEXT)


def test_sd_trains_and_writes_test_predictions(tiny_ckpt, tmp_path, capsys):
    expdir, out = train(tiny_ckpt, "SD", tmp_path, capsys)
    assert "mode dev acc" in out and (expdir / "frame_shift").read_text().strip() == "320"
    evaluate(expdir / "states-4.ckpt", "test", capsys)
    predictions = sorted((expdir / "scoring" / "predictions").glob("*.h5"))
    assert [p.stem for p in predictions] == ["test_mix0", "test_mix1"]
    with h5py.File(predictions[0]) as h5:
        assert h5["T_hat"].shape[1] == 2  # two speakers


CLONE_STANDIN = Path(__file__).parent / "s3prl_clone_standin"
FRAME_LEVEL_CTC = {"project_dim": 16, "zero_infinity": True, "select": "FrameLevel"}
PHONES = {"HELLO": "HH AH L OW", "WORLD": "W ER L D", "A": "AH", "CAT": "K AE T", "THE": "DH AH",
          "DOG": "D AO G", "RAN": "R AE N", "NO": "N OW"}  # fmt: skip
SNIPS = (("play HELLO WORLD", "O song song"), ("A CAT", "O O"), ("play NO", "O song"))  # slot per word


def ctc_config(corpus: dict, text: dict, metrics: list, higher_better: bool) -> dict:
    corpus = {**corpus, "bucketing": True, "batch_size": 2, "num_workers": 0}
    return {
        **toy_corpora.runner_config(),
        "downstream_expert": {
            "corpus": corpus, "text": text, "model": FRAME_LEVEL_CTC, "save_best_on": ["dev"],
            "metric_higher_better": higher_better, "metric": metrics,
        },
    }  # fmt: skip


def make_pr(root: Path) -> dict:
    """PR: toy LibriSpeech, a lexicon and a phoneme vocabulary (as the clone's libriphone.yaml)."""
    splits = toy_corpora.make_librispeech(root / "LibriSpeech")
    (root / "lexicon.txt").write_text("".join(f"{w} {p}\n" for w, p in PHONES.items()))
    phones = sorted({p for pron in PHONES.values() for p in pron.split()})
    (root / "phoneme.txt").write_text("".join(f"{p}\n" for p in phones))
    corpus = {"name": "libriphone", "path": str(root / "LibriSpeech"), "lexicon": [str(root / "lexicon.txt")],
              "train": splits[:1], "dev": splits[1:2], "test": splits[2:]}  # fmt: skip
    return ctc_config(corpus, {"mode": "word", "vocab_file": str(root / "phoneme.txt")}, ["per"], False)


def make_sf(root: Path) -> dict:
    """SF: toy utterances with slot tags, a character vocabulary and slots.txt (as snips.yaml)."""
    for split in ("train", "valid", "test"):
        lines = []
        for n, (sentence, tags) in enumerate(SNIPS):
            toy_corpora.write_wav(root / split / f"{split}{n}.wav", 0.8, 7 * n + len(split))
            lines.append(f"{split}{n}\tBOS {sentence.upper()} EOS\tO {tags} O\n")
        (root / f"{split}.tsv").write_text("".join(lines))
    (root / "character.txt").write_text("".join(f"{c}\n" for c in " ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))
    (root / "slots.txt").write_text("O\nsong")  # the first line is skipped by the text encoder
    corpus = {"name": "snips", "path": str(root), "train": ["train"], "dev": ["valid"], "test": ["test"]}
    text = {"mode": "character-slot", "vocab_file": str(root / "character.txt"), "slots_file": str(root / "slots.txt")}
    return ctc_config(corpus, text, ["slot_type_f1", "slot_value_cer"], True)


@pytest.mark.parametrize("task,make", [("PR", make_pr), ("SF", make_sf)])
def test_ctc_tasks_train_and_test_with_a_clones_corpus_modules(tiny_ckpt, tmp_path, capsys, monkeypatch, task, make,
                                                               isolated_ctc_corpus):
    """PR and SF need the clone's downstream/ctc/corpus: run from a "clone" directory that has
    it (test stand-ins), the launcher imports those modules and s3prl's ctc expert trains."""
    config = tmp_path / "config.yaml"
    toy_corpora.write_config(make(tmp_path / "corpus"), config)
    monkeypatch.chdir(CLONE_STANDIN)
    expdir = tmp_path / "exp"
    run_downstream.main(["-m", "train", "-u", "mamba_hubert", "-k", str(tiny_ckpt), "-d", "ctc", "-c", str(config),
                         "-p", str(expdir), "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    import s3prl.downstream.ctc.corpus as corpus_package

    assert Path(corpus_package.__file__).parent == CLONE_STANDIN / "downstream" / "ctc" / "corpus"
    test_out = evaluate(expdir / "dev-best.ckpt", "test", capsys)
    for metric in superb.TASKS[task].metrics:
        [dev_value] = metric.read(out, "dev")
        [test_value] = metric.read(test_out, "test")
        assert 0 <= dev_value and 0 <= test_value
    assert len((expdir / "test-hyp.ark").read_text().splitlines()) == (4 if task == "PR" else 3)


def test_qbe_runs_dtw_on_each_layer(tiny_ckpt, tmp_path, capsys):
    config = toy_task("QbE", tmp_path)
    for layer in (0, 2):
        expdir = tmp_path / f"layer{layer}"
        run_downstream.main(
            ["-m", "evaluate", "-t", "dev", "-l", str(layer), "-u", "mamba_hubert", "-k", str(tiny_ckpt),
             "-d", "quesst14_dtw", "-c", str(config), "-p", str(expdir), "--device", "cpu"]
        )  # fmt: skip
        root = etree.parse(str(expdir / "benchmark.stdlist.xml")).getroot()
        terms = root.findall("detected_termlist")
        assert sorted(t.get("termid") for t in terms) == ["quesst14_dev_000", "quesst14_dev_001"]
        assert all(len(t.findall("term")) == 4 for t in terms)  # every English document scored


def test_asv_trains_and_every_checkpoint_is_tested_on_cpu(tiny_ckpt, tmp_path, capsys):
    """s3prl's ASV expert calls .cuda() on its attention mask; the launcher's fix makes the mask
    follow the features, so the task trains and tests with --device cpu."""
    expdir, _ = train(tiny_ckpt, "ASV", tmp_path, capsys)
    checkpoints = sorted(expdir.glob("states-*.ckpt"))
    assert [c.name for c in checkpoints] == ["states-2.ckpt", "states-4.ckpt"]
    early, late = (torch.load(c, map_location="cpu") for c in checkpoints)
    assert late["Step"] == 4
    assert any(not torch.equal(early["Downstream"][k], v) for k, v in late["Downstream"].items())  # it trained
    for checkpoint in checkpoints:
        [eer] = superb.TASKS["ASV"].metrics[0].read(evaluate(checkpoint, "test", capsys), "test")
        assert 0 <= eer <= 100


def test_asv_dataset_trims_silence_and_caches_outside_the_package(tmp_path):
    config = toy_corpora.make("ASV", tmp_path / "corpus")
    dataset_caches.isolate("sv_voxceleb1", config)
    from s3prl.downstream.sv_voxceleb1.dataset import SpeakerVerifi_test, SpeakerVerifi_train

    datarc = config["downstream_expert"]["datarc"]
    train_set = SpeakerVerifi_train(
        datarc["vad_config"], ["Voxceleb1"], [tmp_path / "corpus" / "dev" / "wav"], datarc["train_meta_data"],
        datarc["max_timestep"], n_jobs=1,
    )  # fmt: skip
    assert len(train_set) == 4 and train_set.speaker_num == 2
    wav, utterance, label = train_set[0]
    assert wav.ndim == 1 and len(wav) == datarc["max_timestep"] and label in (0, 1)
    assert list((tmp_path / "s3prl_cache" / "sv_voxceleb1").rglob("Voxceleb1_length.pt"))
    test_wavs = str(tmp_path / "corpus" / "test" / "wav")
    test_set = SpeakerVerifi_test(datarc["vad_config"], test_wavs, datarc["test_meta_data"])
    assert len(test_set.pair_table) == 4 and len(test_set) == 4


def test_run_downstream_command_line_trains(tiny_ckpt, tmp_path):
    config = toy_task("IC", tmp_path)
    env = {**os.environ, dataset_caches.CACHE_ENV: str(tmp_path / "cache")}
    command = [
        sys.executable, "-m", "s3prl_upstream.run_downstream", "-m", "train", "-u", "mamba_hubert",
        "-k", str(tiny_ckpt), "-d", "fluent_commands", "-c", str(config), "-p", str(tmp_path / "exp"),
        "--device", "cpu", "-o", "config.runner.total_steps=2,,config.runner.eval_step=2",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dev acc:" in done.stdout and (tmp_path / "exp" / "states-2.ckpt").exists()


# --- data preparation -------------------------------------------------------------------


def test_length_tables_list_files_longest_first(tmp_path):
    splits = toy_corpora.make_librispeech(tmp_path / "LibriSpeech")
    [table_path, *_] = write_length_tables(tmp_path / "LibriSpeech", splits, tmp_path / "len")
    table = pd.read_csv(table_path)
    assert list(table.columns[1:]) == ["file_path", "length", "label"]
    assert table["length"].is_monotonic_decreasing and table["file_path"][0].startswith("train-clean-100/1/10/")
    with pytest.raises(ValueError, match="no LibriSpeech split"):
        write_length_tables(tmp_path / "LibriSpeech", ["train-other-500"], tmp_path / "len")


# --- collection, learning-rate choice and SUPERB_S ---------------------------------------


def write_run(directory, train_log="", test_log="", test_name="test.log"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.log").write_text(train_log)
    if test_log:
        (directory / test_name).write_text(test_log)


def test_the_learning_rate_best_on_dev_is_chosen_and_its_test_reported(tmp_path):
    write_run(tmp_path / "KS" / "lr1.0e-3", "dev acc: 0.90\ndev acc: 0.95\ntrain acc: 0.99\n", "test acc: 0.93\n")
    write_run(tmp_path / "KS" / "lr1.0e-4", "dev acc: 0.91\n", "test acc: 0.97\n")
    result = superb.collect_task(tmp_path / "KS", superb.TASKS["KS"])
    assert result.setting == "lr1.0e-3"
    assert result.dev["Acc"] == pytest.approx(95.0) and result.test["Acc"] == pytest.approx(93.0)


def test_lower_is_better_metrics_and_untested_settings(tmp_path):
    write_run(tmp_path / "PR" / "lr1.0e-2", "dev per: 0.20\ndev per: 0.12\n")  # best on dev, not tested yet
    write_run(tmp_path / "PR" / "lr1.0e-3", "dev per: 0.15\n", "test per: 0.16\n")
    assert superb.choose_setting(tmp_path / "PR", superb.TASKS["PR"]) == "lr1.0e-2"
    assert superb.collect_task(tmp_path / "PR", superb.TASKS["PR"]) is None
    (tmp_path / "PR" / "lr1.0e-2" / "test.log").write_text("test per: 0.125\n")
    assert superb.collect_task(tmp_path / "PR", superb.TASKS["PR"]).test["PER"] == pytest.approx(12.5)


def test_qbe_best_layer_on_dev_and_its_test_mtwv_from_the_scorer_output(tmp_path):
    # QUESST14's score-TWV-Cnxe.sh prints "actTWV: <v>  maxTWV: <v>  Threshold: <t>"; maxTWV is
    # the MTWV (format as other SUPERB wrappers parse it)
    def scorer_log(act, best):
        return f"Cnxe: 0.98  minCnxe: 0.95\nactTWV: {act}  maxTWV: {best}  Threshold: 0.31\n"

    for layer, dev_mtwv in ((0, 0.0101), (3, 0.0456), (6, 0.0302)):
        (tmp_path / "QbE" / f"layer{layer}").mkdir(parents=True)
        (tmp_path / "QbE" / f"layer{layer}" / "dev.log").write_text(scorer_log(-0.2, dev_mtwv))
    (tmp_path / "QbE" / "layer3" / "test.log").write_text(scorer_log(-0.1, 0.0388))
    result = superb.collect_task(tmp_path / "QbE", superb.TASKS["QbE"])
    assert result.setting == "layer3" and result.dev == {"MTWV": 0.0456} and result.test == {"MTWV": 0.0388}


def test_er_averages_the_five_folds(tmp_path):
    for k in range(1, 6):
        write_run(tmp_path / "ER" / "lr1.0e-4" / f"fold{k}", f"dev acc: 0.{k}\n", f"test acc: 0.{k}\n")
    result = superb.collect_task(tmp_path / "ER", superb.TASKS["ER"])
    assert result.test["Acc"] == pytest.approx(30.0) and result.dev["Acc"] == pytest.approx(30.0)
    (tmp_path / "ER" / "lr1.0e-4" / "fold5" / "test.log").unlink()  # a fold missing: not reported
    assert superb.collect_task(tmp_path / "ER", superb.TASKS["ER"]) is None


def test_asv_reports_the_best_checkpoint_and_sd_the_best_dscore_result(tmp_path):
    lr = tmp_path / "ASV" / "lr1.0e-4"
    write_run(lr, "", "sv-voxceleb1/test-EER: 0.061\n", "test_states-20000.log")
    write_run(lr, "", "sv-voxceleb1/test-EER: 0.054\n", "test_states-40000.log")
    assert superb.collect_task(tmp_path / "ASV", superb.TASKS["ASV"]).test["EER"] == pytest.approx(5.4)

    sd = tmp_path / "SD" / "lr1.0e-4"
    write_run(sd, "mode dev acc 0.9 der 0.12\n", "anything\n")
    (sd / "scoring").mkdir()
    for name, der in (("result_th0.5_med11", "6.51"), ("result_th0.6_med1", "7.02")):
        (sd / "scoring" / name).write_text(f"File DER JER\n*** OVERALL ***   {der}   30.1   0.9\n")
    result = superb.collect_task(tmp_path / "SD", superb.TASKS["SD"])
    assert result.test["DER"] == pytest.approx(6.51) and result.dev["DER"] == pytest.approx(12.0)


REFERENCE = {
    "KS": {"Acc": {"higher_better": True, "fbank": 10.0, "best": 90.0}},
    "PR": {"PER": {"higher_better": False, "fbank": 80.0, "best": 10.0}},
    "SF": {"F1": {"higher_better": True, "fbank": 60.0, "best": 90.0},
           "CER": {"higher_better": False, "fbank": 50.0, "best": 20.0}},
}  # fmt: skip


def test_superb_s_against_a_hand_computed_example():
    results = [
        superb.TaskResult("KS", "lr", {}, {"Acc": 70.0}),  # (70 - 10) / (90 - 10) = 0.75
        superb.TaskResult("PR", "lr", {}, {"PER": 24.0}),  # (24 - 80) / (10 - 80) = 0.80
        superb.TaskResult("SF", "lr", {}, {"F1": 84.0, "CER": 35.0}),  # mean(0.80, 0.50) = 0.65
    ]
    score, per_task = superb.superb_s(results, REFERENCE)
    assert per_task == pytest.approx({"KS": 0.75, "PR": 0.80, "SF": 0.65})
    assert score == pytest.approx(1000 * (0.75 + 0.80 + 0.65) / 3)  # 733.33


def test_superb_s_refuses_missing_or_inconsistent_references():
    with pytest.raises(ValueError, match="missing .* KS/Acc"):
        superb.superb_s([superb.TaskResult("KS", "lr", {}, {"Acc": 70.0})], {"KS": {"Acc": {"fbank": None}}})
    with pytest.raises(ValueError, match="must be lower"):
        superb.normalized_score(5.0, fbank=10.0, best=20.0, higher_better=False)


def test_collect_cli_with_the_shipped_reference_computes_superb_s(tmp_path, capsys):
    write_run(tmp_path / "KS" / "lr1.0e-3", "dev acc: 0.9\n", "test acc: 0.93\n")
    reference = REPO / "egs2" / "superb" / "conf" / "superb_reference.yaml"
    shipped = yaml.safe_load(reference.read_text())["tasks"]
    assert set(shipped) == set(superb.TASKS)
    for task, spec in superb.TASKS.items():  # every metric of every task has both points
        for metric in spec.metrics:
            ref = shipped[task][metric.name]
            assert ref["higher_better"] == metric.higher_better and None not in (ref["fbank"], ref["best"])
    assert superb.main(["collect", str(tmp_path), "--reference", str(reference)]) == 0
    out = capsys.readouterr().out
    # KS: (93 - 41.3826674) / (96.66 - 41.3826674) = 0.93379
    assert "| KS | Acc | lr1.0e-3 | 90 | 93 |" in out and "SUPERB_S over 1 task(s) (KS): 933.79" in out
    assert superb.main(["best-setting", str(tmp_path / "KS")]) == 0
    assert capsys.readouterr().out.strip() == "lr1.0e-3"
