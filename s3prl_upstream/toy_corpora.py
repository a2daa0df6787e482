"""Tiny synthetic stand-ins for the SUPERB corpora, laid out as the real ones are, with tiny
s3prl configs: for tests and ``egs2/superb/run.sh --toy true`` smoke runs on CPU.

``make(task, root)`` writes the corpus for one SUPERB task under ``root`` and returns the
s3prl config (dict) that runs its downstream on it in a few steps. The audio is short tones
and noise: the runs exercise the pipelines, they learn nothing.
"""

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import soundfile
import yaml

from espnet_mamba.audio import write_data_dir
from espnet_mamba.validation import SAMPLE_RATE
from s3prl_upstream.superb_data import write_length_tables

KS_WORDS = ("yes", "no", "bed")  # "bed" is none of the 10 keywords: class _unknown_
KS_SPEAKERS = [f"{i:08x}" for i in range(12)]


def write_wav(path: Path, seconds: float, seed: int, sample_rate: int = SAMPLE_RATE) -> None:
    """A tone (frequency from ``seed``) plus a little noise, 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * (seed % 13)) * t) + 0.01 * rng.standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav.astype(np.float32), sample_rate, subtype="PCM_16")


def runner_config(**overrides) -> dict:
    """s3prl ``runner`` + ``optimizer`` sections for a 4-step run that evaluates and saves."""
    runner = dict(
        total_steps=4, gradient_clipping=1, gradient_accumulate_steps=1, log_step=2, eval_step=4,
        save_step=2, max_keep=2, eval_dataloaders=["dev"],
    )  # fmt: skip
    runner.update(overrides)
    return {"runner": runner, "optimizer": {"name": "TorchOptim", "torch_optim_name": "Adam", "lr": 1.0e-3}}


UTTERANCE_MODEL = {"projector_dim": 16, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"}}


def make_speech_commands(root: Path) -> dict:
    """KS: ``train/<word>/<speaker>_nohash_<n>.wav`` + ``_background_noise_``, ``test/<word>/``."""
    for w, word in enumerate(KS_WORDS):
        for s, speaker in enumerate(KS_SPEAKERS):
            write_wav(root / "train" / word / f"{speaker}_nohash_0.wav", 0.5, 100 * w + s)
    write_wav(root / "train" / "_background_noise_" / "noise.wav", 1.5, 999)
    for word in ("yes", "no", "_unknown_", "_silence_"):
        write_wav(root / "test" / word / f"test_{word}.wav", 0.5, len(word))
    datarc = dict(
        speech_commands_root=str(root / "train"), speech_commands_test_root=str(root / "test"),
        num_workers=0, batch_size=4,
    )  # fmt: skip
    return {**runner_config(), "downstream_expert": {"datarc": datarc, "modelrc": UTTERANCE_MODEL}}


def make_voxceleb1(root: Path) -> dict:
    """SID: ``dev/wav/id1000N/<video>/<n>.wav``, ``test/wav/...`` and the split list
    (``1|2|3 <id>/<video>/<n>.wav`` for train/dev/test)."""
    lines = []
    for speaker in range(3):
        for n in range(4):
            relative = f"id{10001 + speaker}/video{n % 2}/{n + 1:05d}.wav"
            split = 1 if n < 2 else 2 if n == 2 else 3
            part = "test" if split == 3 else "dev"
            write_wav(root / part / "wav" / relative, 0.6, 10 * speaker + n)
            lines.append(f"{split} {relative}")
    meta = root / "iden_split.txt"
    meta.write_text("\n".join(lines) + "\n")
    datarc = dict(
        file_path=str(root), meta_data=str(meta), num_workers=0, train_batch_size=2, eval_batch_size=1,
        max_timestep=8000,
    )  # fmt: skip
    return {**runner_config(), "downstream_expert": {"datarc": datarc, "modelrc": UTTERANCE_MODEL}}


def make_fluent_commands(root: Path) -> dict:
    """IC: ``wavs/speakers/<speaker>/<id>.wav`` and ``data/{train,valid,test}_data.csv``."""
    intents = [("activate", "lights", "kitchen"), ("deactivate", "lights", "none"), ("increase", "heat", "bedroom")]
    header = ",path,speakerId,transcription,action,object,location\n"
    for split, count in (("train", 6), ("valid", 3), ("test", 3)):
        rows = []
        for i in range(count):
            action, obj, location = intents[i % len(intents)]
            path = f"wavs/speakers/spk{split}/{split}{i}.wav"
            write_wav(root / path, 0.5, 7 * i + len(split))
            rows.append(f"{i},{path},spk{split},{action} the {obj},{action},{obj},{location}\n")
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{split}_data.csv").write_text(header + "".join(rows))
    datarc = dict(file_path=str(root), num_workers=0, train_batch_size=2, eval_batch_size=2)
    return {**runner_config(), "downstream_expert": {"datarc": datarc, "modelrc": UTTERANCE_MODEL}}


def make_emotion(root: Path) -> dict:
    """ER: IEMOCAP's ``Session<k>/sentences/wav/<dialog>/<utt>.wav`` and
    ``Session<k>/dialog/EmoEvaluation/<dialog>.txt``, then s3prl's IEMOCAP_preprocess
    writes ``meta_data/Session<k>/{train,test}_meta_data.json``."""
    from s3prl.downstream.emotion import IEMOCAP_preprocess

    labels = ("neu", "hap", "ang", "sad", "exc", "fru")  # "fru" is not one of the 4 classes
    for session in range(1, 6):
        dialog = f"Ses0{session}F_impro01"
        lines = []
        for i, label in enumerate(labels):
            utterance = f"{dialog}_F{i:03d}"
            wav_dir = root / f"Session{session}" / "sentences" / "wav" / dialog
            write_wav(wav_dir / f"{utterance}.wav", 0.5, 10 * session + i)
            lines.append(f"[{i:.4f} - {i + 0.5:.4f}]\t{utterance}\t{label}\t[2.5000, 2.5000, 2.5000]\n")
        evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("% header line\n\n" + "".join(lines))
    IEMOCAP_preprocess.main(str(root))
    datarc = dict(
        root=str(root), meta_data=str(root / "meta_data"), test_fold="fold1", pre_load=True,
        train_batch_size=2, eval_batch_size=2, num_workers=0, valid_ratio=0.2,
    )  # fmt: skip
    return {**runner_config(), "downstream_expert": {"datarc": datarc, "modelrc": UTTERANCE_MODEL}}


LIBRISPEECH_TEXT = ("HELLO WORLD", "A CAT", "THE DOG RAN", "NO")


def make_librispeech(root: Path) -> List[str]:
    """LibriSpeech's ``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` with
    ``<speaker>-<chapter>.trans.txt``; returns the split names."""
    splits = ["train-clean-100", "dev-clean", "test-clean"]
    for s, split in enumerate(splits):
        chapter_dir = root / split / f"{s + 1}" / "10"
        lines = []
        for n, text in enumerate(LIBRISPEECH_TEXT):
            utterance = f"{s + 1}-10-{n:04d}"
            write_wav(chapter_dir / f"{utterance}.flac", 0.4 + 0.1 * n, 10 * s + n)
            lines.append(f"{utterance} {text}\n")
        (chapter_dir / f"{s + 1}-10.trans.txt").write_text("".join(lines))
    return splits


def make_asr(root: Path) -> dict:
    """ASR: LibriSpeech, its length tables (``len_for_bucket``) and a character dictionary."""
    splits = make_librispeech(root / "LibriSpeech")
    write_length_tables(root / "LibriSpeech", splits, root / "len_for_bucket")
    characters = sorted(set("".join(LIBRISPEECH_TEXT).replace(" ", "")))
    (root / "char.dict").write_text("".join(f"{c} 1\n" for c in ["|", *characters]))
    datarc = {
        "train": ["train-clean-100"], "dev-clean": ["dev-clean"], "test-clean": ["test-clean"],
        "num_workers": 0, "train_batch_size": 2, "batch_size": 2, "eval_batch_size": 1,
        "libri_root": str(root / "LibriSpeech"), "bucket_file": str(root / "len_for_bucket"),
        "dict_path": str(root / "char.dict"), "zero_infinity": True, "decoder_args": {"decoder_type": "None"},
    }  # fmt: skip
    modelrc = {
        "project_dim": 16, "select": "RNNs",
        "RNNs": {
            "total_rate": -1, "module": "LSTM", "bidirection": True, "dim": [16], "dropout": [0.0],
            "layer_norm": [False], "proj": [False], "sample_rate": [1], "sample_style": "concat",
        },
    }  # fmt: skip
    config = runner_config(eval_dataloaders=["dev-clean"])
    return {**config, "downstream_expert": {"datarc": datarc, "modelrc": modelrc}}


def make_quesst14(root: Path) -> dict:
    """QbE: ``quesst14Database/{Audio,dev_queries,eval_queries}/*.wav`` and the
    ``scoring/language_key_*.lst`` lists (``<dir>/<file>.wav <language>``)."""
    database = root / "quesst14Database"
    lists = {"utterances": ("Audio", 4), "dev": ("dev_queries", 2), "eval": ("eval_queries", 2)}
    (database / "scoring").mkdir(parents=True, exist_ok=True)
    for name, (folder, count) in lists.items():
        lines = []
        for i in range(count):
            stem = f"quesst14_{name}_{i:03d}"
            write_wav(database / folder / f"{stem}.wav", 0.5 if folder == "Audio" else 0.25, 31 * i + len(name))
            lines.append(f"quesst14Database/{folder}/{stem}.wav nnenglish\n")
        lines.append(f"quesst14Database/{folder}/not_english.wav nnczech\n")  # dropped by the loader
        (database / "scoring" / f"language_key_{name}.lst").write_text("".join(lines))
    expert = {
        "max_workers": 1, "feature_normalization": True, "silence_frame": None,
        "datarc": {"dataset_root": str(database), "num_workers": 0, "batch_size": 1},
        "dtwrc": {"dist_method": "cosine_exp", "minmax_norm": True, "step_pattern": "asymmetric", "subsequence": True},
    }  # fmt: skip
    return {"runner": {}, "downstream_expert": expert}


def make_sv_voxceleb1(root: Path) -> dict:
    """ASV: VoxCeleb1 ``dev/wav`` and ``test/wav``, a dev speaker list and trial lists
    (``<1|0> <utt1> <utt2>``)."""
    for part, speakers in (("dev", (10001, 10002)), ("test", (10270, 10271))):
        for speaker in speakers:
            for n in range(2):
                write_wav(root / part / "wav" / f"id{speaker}" / "video0" / f"{n + 1:05d}.wav", 1.2, speaker + n)
    (root / "dev_speaker_ids.txt").write_text("id10001\nid10002\n")
    trials = (
        "1 id{a}/video0/00001.wav id{a}/video0/00002.wav\n0 id{a}/video0/00001.wav id{b}/video0/00001.wav\n"
        "1 id{b}/video0/00001.wav id{b}/video0/00002.wav\n0 id{a}/video0/00002.wav id{b}/video0/00002.wav\n"
    )
    (root / "dev_trials.txt").write_text(trials.format(a=10001, b=10002))
    (root / "test_trials.txt").write_text(trials.format(a=10270, b=10271))
    datarc = dict(
        vad_config={"min_sec": 8000}, file_path=str(root), train_meta_data=str(root / "dev_speaker_ids.txt"),
        dev_meta_data=str(root / "dev_trials.txt"), test_meta_data=str(root / "test_trials.txt"),
        max_timestep=16000, train_batch_size=2, eval_batch_size=1, num_workers=0,
    )  # fmt: skip
    modelrc = {
        "module": "XVector", "input_dim": 16, "agg_module": "SP", "utter_module": "UtteranceExtractor",
        "module_config": {"XVector": {"agg_dim": 32, "dropout_p": 0.0, "batch_norm": False}},
        "ObjectiveLoss": "AMSoftmaxLoss", "LossConfig": {"AMSoftmaxLoss": {"s": 30.0, "m": 0.4}},
    }  # fmt: skip
    config = runner_config(eval_dataloaders=[], max_keep=4)
    return {**config, "downstream_expert": {"datarc": datarc, "modelrc": modelrc}}


def make_diarization(root: Path) -> dict:
    """SD: Kaldi-style ``{train,dev,test}/`` folders (wav.scp, segments, utt2spk, spk2utt,
    reco2dur, rttm) of 2-speaker mixtures, as LibriMix's prepare_diarization.py writes."""
    for split in ("train", "dev", "test"):
        scp, segments, utt2spk, reco2dur, rttm = {}, {}, {}, {}, []
        for r in range(2):
            recording = f"{split}_mix{r}"
            write_wav(root / "wav" / f"{recording}.wav", 2.0, 5 * r + len(split))
            scp[recording] = str(root / "wav" / f"{recording}.wav")
            reco2dur[recording] = "2.0"
            for speaker, (start, end) in (("spkA", (0.0, 1.2)), ("spkB", (0.8, 2.0))):
                utterance = f"{speaker}_{recording}"
                segments[utterance] = f"{recording} {start:.2f} {end:.2f}"
                utt2spk[utterance] = speaker
                rttm.append(f"SPEAKER {recording} 1 {start:.2f} {end - start:.2f} <NA> <NA> {speaker} <NA> <NA>\n")
        write_data_dir(root / split, wav_scp=scp, utt2spk=utt2spk, segments=segments, reco2dur=reco2dur)
        (root / split / "rttm").write_text("".join(sorted(rttm)))
    expert = {
        "datarc": {"chunk_size": 50, "subsampling": 1, "label_delay": 0, "num_speakers": 2, "rate": 16000,
                   "frame_shift": None},
        "loaderrc": {"num_workers": 0, "train_batchsize": 2, "eval_batchsize": 1, "train_dir": str(root / "train"),
                     "dev_dir": str(root / "dev"), "test_dir": str(root / "test")},
        "scorerc": {"save_predictions": True},
        "modelrc": {"rnn_layers": 1, "hidden_size": 16},
    }  # fmt: skip
    return {**runner_config(), "downstream_expert": expert}


# SUPERB task -> builder
BUILDERS: Dict[str, Callable[[Path], dict]] = {
    "KS": make_speech_commands,
    "SID": make_voxceleb1,
    "IC": make_fluent_commands,
    "ER": make_emotion,
    "ASR": make_asr,
    "QbE": make_quesst14,
    "ASV": make_sv_voxceleb1,
    "SD": make_diarization,
}


def make(task: str, root: Path) -> dict:
    """Write the toy corpus of SUPERB ``task`` under ``root``; return its s3prl config."""
    if task not in BUILDERS:
        raise ValueError(f"no toy corpus for task {task!r}; toy corpora exist for {', '.join(BUILDERS)}")
    return BUILDERS[task](Path(root))


def write_config(config: dict, path: Path) -> None:
    """Save an s3prl config as YAML."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a toy SUPERB corpus and its s3prl config (ROOT/config.yaml).")
    parser.add_argument("task", choices=list(BUILDERS))
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    config = make(args.task, args.root)
    write_config(config, args.root / "config.yaml")
    print(args.root / "config.yaml")


if __name__ == "__main__":
    main()
