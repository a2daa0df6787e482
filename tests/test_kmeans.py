"""HuBERT's pseudo-labels (espnet_mamba.kmeans): the feature dump and the label files, whole
and after a kill."""

import numpy as np
import pytest
import soundfile
import torch

from espnet_mamba import kmeans
from espnet_mamba.features import mfcc_features


@pytest.fixture()
def wav_scp(tmp_path):
    """Five utterances of noise, 0.5-0.9 s at 16 kHz."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(5):
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, rng.standard_normal(8000 + 1600 * i).astype(np.float32) * 0.1, 16000)
        lines.append(f"u{i} {path}\n")
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(lines))
    return scp


class Counting:
    """MFCC features that record the utterances (by length) they were asked for."""

    def __init__(self):
        self.lengths = []

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        self.lengths.append(len(wav))
        return mfcc_features(wav)


def _kill_after_first_shard(out_dir):
    """What a kill during the second shard's features leaves: the first shard alone."""
    for path in list((out_dir / "shards").glob("0000[12].*")) + [out_dir / "lengths.tsv"]:
        path.unlink()


def test_dump_writes_shards_that_load_as_one_array(wav_scp, tmp_path):
    out = tmp_path / "feats"
    frames = kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2)
    expected = [mfcc_features(torch.from_numpy(soundfile.read(tmp_path / f"u{i}.wav", dtype="float32")[0]))
                for i in range(5)]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"0000{i}.{ext}" for i in range(3)
                                                                    for ext in ("npy", "tsv")]
    feats = kmeans.load_features(out)
    assert feats.dtype == np.float32 and frames == len(feats) == sum(len(e) for e in expected)
    np.testing.assert_array_equal(feats, torch.cat(expected).numpy())
    assert (out / "lengths.tsv").read_text() == "".join(f"u{i} {len(e)}\n" for i, e in enumerate(expected))


def test_killed_dump_goes_on_from_its_first_missing_shard(wav_scp, tmp_path):
    out = tmp_path / "feats"
    kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2)
    whole = kmeans.load_features(out)
    _kill_after_first_shard(out)
    with pytest.raises(ValueError, match="no finished feature dump"):
        kmeans.load_features(out)
    features = Counting()
    kmeans.dump_features(wav_scp, features, out, shard_utterances=2)
    assert features.lengths == [8000 + 1600 * i for i in (2, 3, 4)]  # u0 and u1 were not computed again
    np.testing.assert_array_equal(kmeans.load_features(out), whole)


def test_dump_reads_only_the_chosen_portion_and_refuses_shards_of_another_choice(wav_scp, tmp_path, monkeypatch):
    read = []
    load_audio = kmeans.load_audio
    monkeypatch.setattr(kmeans, "load_audio", lambda path, utt, *args: read.append(utt) or load_audio(path, utt, *args))
    frames = kmeans.dump_features(wav_scp, mfcc_features, tmp_path / "feats", portion=0.5, seed=1)
    chosen = [line.split()[0] for line in (tmp_path / "feats" / "lengths.tsv").read_text().splitlines()]
    assert read == chosen and 0 < len(chosen) < 5 and frames > 0
    with pytest.raises(ValueError, match="other utterances than this dump chooses"):
        kmeans.dump_features(wav_scp, mfcc_features, tmp_path / "feats", portion=1.0)


def test_killed_label_run_goes_on_after_its_whole_lines(wav_scp, tmp_path):
    feats_dir = tmp_path / "feats"
    kmeans.dump_features(wav_scp, mfcc_features, feats_dir)
    km = kmeans.fit_kmeans(kmeans.load_features(feats_dir), n_clusters=4, batch_size=64)
    whole = tmp_path / "whole.txt"
    kmeans.write_labels(wav_scp, mfcc_features, True, km, whole)
    lines = whole.read_text().splitlines(keepends=True)
    assert [line.split()[0] for line in lines] == [f"u{i}" for i in range(5)]
    assert kmeans.check_labels(wav_scp, whole, 4) == 5

    resumed = tmp_path / "resumed.txt"
    (tmp_path / "resumed.txt.partial").write_text(lines[0] + lines[1] + lines[2][:7])  # the kill tore u2's line
    features = Counting()
    kmeans.write_labels(wav_scp, features, True, km, resumed)
    assert features.lengths == [8000 + 1600 * i for i in (2, 3, 4)]
    assert resumed.read_text() == whole.read_text()
    assert not (tmp_path / "resumed.txt.partial").exists()


def test_killed_runs_go_on_only_with_the_settings_they_began_with(wav_scp, tmp_path):
    """A dump or a label run begun with other features (kind, layer, checkpoint) or another
    k-means model is refused, not mixed with these: re-running a stage after changing an option."""
    out = tmp_path / "feats"
    kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2, settings="kind=layer layer=6")
    _kill_after_first_shard(out)
    with pytest.raises(ValueError, match=r"begun with other settings \(kind=layer layer=6\) than these \(kind=mfcc\)"):
        kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2, settings="kind=mfcc")
    kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2, settings="kind=layer layer=6")
    km = kmeans.fit_kmeans(kmeans.load_features(out), n_clusters=4, batch_size=64)

    labels = tmp_path / "text"
    (tmp_path / "text.partial").write_text("")
    (tmp_path / "text.partial.settings").write_text("km-1")
    with pytest.raises(ValueError, match="text.partial was begun with other settings"):
        kmeans.write_labels(wav_scp, mfcc_features, True, km, labels, settings="km-2")
    kmeans.write_labels(wav_scp, mfcc_features, True, km, labels, settings="km-1")
    assert kmeans.check_labels(wav_scp, labels, 4) == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("text")) == ["text"]
    kmeans.write_labels(wav_scp, mfcc_features, True, km, labels, settings="km-2")  # a new run: no partial left


def test_audio_shorter_than_one_frame_is_named(tmp_path):
    """Kaldi's MFCC would stop on an assertion about its window; the shape files would let the
    utterance into training, which stops at its first batch."""
    from espnet_mamba.bin import shapes

    soundfile.write(tmp_path / "short.wav", np.zeros(399, dtype=np.float32), 16000)
    (tmp_path / "wav.scp").write_text(f"tiny {tmp_path / 'short.wav'}\n")
    with pytest.raises(ValueError, match="utterance tiny: .*399 samples; at least 400"):
        kmeans.dump_features(tmp_path / "wav.scp", mfcc_features, tmp_path / "feats")
    with pytest.raises(ValueError, match="tiny .*399 samples, shorter than one frame"):
        shapes.main(["--wav_scp", str(tmp_path / "wav.scp"), "--out", str(tmp_path / "speech_shape")])


def test_an_empty_wav_scp_is_refused(tmp_path):
    (tmp_path / "wav.scp").write_text("")
    with pytest.raises(ValueError, match="lists no utterances"):
        kmeans.dump_features(tmp_path / "wav.scp", mfcc_features, tmp_path / "feats")


def test_label_run_refuses_a_partial_file_of_other_utterances(wav_scp, tmp_path):
    (tmp_path / "text.partial").write_text("u1 0 0 0\n")
    with pytest.raises(ValueError, match="does not label the first utterances of this wav.scp"):
        kmeans.write_labels(wav_scp, mfcc_features, True, None, tmp_path / "text")


def test_dump_of_fewer_utterances_drops_the_shards_beyond_them(wav_scp, tmp_path):
    out = tmp_path / "feats"
    kmeans.dump_features(wav_scp, mfcc_features, out, shard_utterances=2)
    first_four = tmp_path / "four.scp"
    first_four.write_text("".join(wav_scp.read_text().splitlines(keepends=True)[:4]))
    frames = kmeans.dump_features(first_four, mfcc_features, out, shard_utterances=2)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.npy", "00000.tsv", "00001.npy", "00001.tsv"]
    assert len(kmeans.load_features(out)) == frames
    assert [line.split()[0] for line in (out / "lengths.tsv").read_text().splitlines()] == ["u0", "u1", "u2", "u3"]
