"""tools/espeak_corpus.py, the synthetic corpus of egs2/espeak_commands: Kaldi-style sets that
ESPnet's ASR task reads (with espeak-ng's voice replaced by a tone where espeak-ng is absent),
and espeak-ng's own audio where it is installed."""

import random
import shutil

import pytest
import soundfile
import torch

from recipe_helpers import REPO, load_script


@pytest.fixture(scope="module")
def corpus():
    return load_script(REPO / "tools/espeak_corpus.py")


def test_sets_are_kaldi_style_and_sorted(corpus, tmp_path, monkeypatch):
    spoken = []

    def tone(text, voice, speed, pitch):
        spoken.append((text, voice, speed, pitch))
        return 0.1 * torch.sin(torch.arange(8000 + 100 * len(text)) * 0.05)

    monkeypatch.setattr(corpus, "speak", tone)
    corpus.write_set(tmp_path / "data", tmp_path / "wav", "train", 12, random.Random(0))
    files = {name: (tmp_path / "data/train" / name).read_text().splitlines()
             for name in ("wav.scp", "text", "utt2spk", "spk2utt")}  # fmt: skip
    utts = [line.split()[0] for line in files["wav.scp"]]
    assert len(utts) == 12 and utts == sorted(utts) and len(set(utts)) == 12
    for name in ("text", "utt2spk"):
        assert [line.split()[0] for line in files[name]] == utts
    speakers = {line.split()[0]: line.split()[1] for line in files["utt2spk"]}
    assert all(utt.startswith(speaker + "-") for utt, speaker in speakers.items())
    assert {utt for line in files["spk2utt"] for utt in line.split()[1:]} == set(utts)
    for line in files["text"]:
        words = line.split()[1:]
        assert 2 <= len(words) <= 6 and set(words) <= set(corpus.WORDS)
    assert {voice for _, voice, _, _ in spoken} <= set(corpus.VOICES)
    assert all(130 <= speed <= 200 and 25 <= pitch <= 75 for _, _, speed, pitch in spoken)
    for line in files["wav.scp"]:
        info = soundfile.info(line.split()[1])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")
def test_espeak_speaks_at_16_khz(corpus):
    wav = corpus.speak("one two three", "en-us", speed=160, pitch=50)
    assert wav.ndim == 1 and 0.5 * 16000 < wav.numel() < 3 * 16000
    assert wav.abs().max() > 0.05
