"""HuBERT's pseudo-labels: k-means (scikit-learn) of frame features, and label files.

A label file is Kaldi-style text, ``utt_id l_1 l_2 ... l_T`` with one cluster id per 20 ms
model frame; ``check_labels`` verifies one against the audio before training.
"""

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import joblib
import numpy as np
import soundfile
import torch
from sklearn.cluster import MiniBatchKMeans

from espnet_mamba.atomic_write import write_atomically
from espnet_mamba.audio import load_audio, read_scp, read_wav_scp
from espnet_mamba.features import layer_features, mfcc_features, mfcc_label_rate
from espnet_mamba.nn.feature_extractor import HUBERT_CONV_LAYERS, MIN_SAMPLES, conv_output_lengths

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def feature_function(kind: str, model=None, layer: Optional[int] = None) -> Tuple[FeatureFn, bool]:
    """(waveform -> frame features, whether labels need 100 Hz -> 50 Hz downsampling)."""
    if kind == "mfcc":
        return mfcc_features, True
    if kind == "layer":
        if model is None or layer is None:
            raise ValueError("layer features need a model and a layer")
        return (lambda wav: layer_features(model, wav, layer)), False
    raise ValueError(f"feature kind must be 'mfcc' or 'layer', got {kind!r}")


def dump_features(wav_scp: Union[str, Path], features: FeatureFn, out_dir: Union[str, Path],
                  portion: float = 1.0, seed: int = 0, shard_utterances: int = 1000, settings: str = "") -> int:
    """Features of a random ``portion`` of the utterances, for :func:`load_features`.

    Writes out_dir/shards/NNNNN.npy (frames, D) and NNNNN.tsv (utt_id frames) per
    ``shard_utterances`` chosen utterances, then out_dir/lengths.tsv, the sign that the dump is
    whole. Each file is written atomically, so a killed dump, run again with the same
    arguments, keeps its finished shards and goes on from the first missing one. ``settings``
    names the features (kind, layer, checkpoint): a dump begun with other settings is refused,
    not mixed with these. Only the chosen utterances are read. Returns the number of frames."""
    if not 0 < portion <= 1:
        raise ValueError(f"portion must be in (0, 1], got {portion}")
    entries = read_wav_scp(wav_scp)
    if not entries:
        raise ValueError(f"{wav_scp} lists no utterances")
    rng = np.random.default_rng(seed)
    chosen = [(utt, path) for utt, path in entries.items() if rng.random() < portion] or [next(iter(entries.items()))]
    _check_settings(Path(out_dir) / "settings.txt", settings, Path(out_dir))
    shard_dir = Path(out_dir) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, start in enumerate(range(0, len(chosen), shard_utterances)):
        shard = chosen[start : start + shard_utterances]
        table = shard_dir / f"{index:05d}.tsv"
        text = _finished_shard(table, shard)
        if text is None:
            feats = [features(load_audio(path, utt, MIN_SAMPLES)).numpy().astype(np.float32) for utt, path in shard]
            write_atomically(shard_dir / f"{index:05d}.npy", lambda tmp: _save_npy(tmp, np.concatenate(feats)))
            text = "".join(f"{utt} {len(f)}\n" for (utt, _), f in zip(shard, feats))
            write_atomically(table, lambda tmp: tmp.write_text(text))
            logging.info("features of %d/%d utterances -> %s", start + len(shard), len(chosen), shard_dir)
        lines.append(text)
    for stale in shard_dir.iterdir():  # shards of an earlier dump of more utterances
        if int(stale.name.split(".")[0]) >= len(lines):
            stale.unlink()
    write_atomically(Path(out_dir) / "lengths.tsv", lambda tmp: tmp.write_text("".join(lines)))
    return sum(int(line.split()[1]) for line in "".join(lines).splitlines())


def _check_settings(record: Path, settings: str, output: Path) -> None:
    """Keep ``settings`` in ``record`` beside a resumable ``output``; where the run that began
    it kept other settings, refuse to go on with these."""
    if record.exists():
        if record.read_text() != settings:
            raise ValueError(f"{output} was begun with other settings ({record.read_text()}) than these ({settings}): "
                             f"remove {output} to start again")  # fmt: skip
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(record, lambda tmp: tmp.write_text(settings))


def _finished_shard(table: Path, shard) -> Optional[str]:
    """The table of this shard where an earlier dump finished it, with these utterances; None
    where it did not."""
    if not table.exists():
        return None
    text = table.read_text()
    if [line.split()[0] for line in text.splitlines()] != [utt for utt, _ in shard]:
        raise ValueError(f"{table} holds other utterances than this dump chooses (another wav.scp, portion or seed?); "
                         f"remove {table.parent.parent} to dump again")
    return text


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save given a name would append ".npy" to it
        np.save(f, array)


def load_features(feats_dir: Union[str, Path]) -> np.ndarray:
    """The frames of a finished :func:`dump_features`, (frames, D) float32, in one array
    filled shard by shard (no second copy)."""
    feats_dir = Path(feats_dir)
    if not (feats_dir / "lengths.tsv").exists():
        raise ValueError(f"{feats_dir} holds no finished feature dump (no lengths.tsv): run the dump (again)")
    shards = [np.load(path, mmap_mode="r") for path in sorted((feats_dir / "shards").glob("*.npy"))]
    out = np.empty((sum(len(s) for s in shards), shards[0].shape[1]), dtype=np.float32)
    at = 0
    for shard in shards:
        out[at : at + len(shard)] = shard
        at += len(shard)
    return out


def fit_kmeans(feats: np.ndarray, n_clusters: int, seed: int = 0, batch_size: int = 10000) -> MiniBatchKMeans:
    """MiniBatchKMeans with HuBERT's settings (k-means++ init, 20 inits, 100 iterations)."""
    if len(feats) < n_clusters:
        raise ValueError(f"{len(feats)} frames cannot make {n_clusters} clusters")
    km = MiniBatchKMeans(
        n_clusters=n_clusters, init="k-means++", max_iter=100, batch_size=batch_size,
        n_init=20, reassignment_ratio=0.0, max_no_improvement=100, random_state=seed,
    )  # fmt: skip
    return km.fit(feats)


def save_kmeans(km: MiniBatchKMeans, path: Union[str, Path]) -> None:
    write_atomically(Path(path), lambda tmp: joblib.dump(km, tmp))


def load_kmeans(path: Union[str, Path]) -> MiniBatchKMeans:
    km = joblib.load(path)
    if not isinstance(km, MiniBatchKMeans):
        raise ValueError(f"{path} does not hold a k-means model")
    return km


def write_labels(wav_scp, features: FeatureFn, downsample: bool, km: MiniBatchKMeans,
                 out_path: Union[str, Path], settings: str = "") -> None:
    """One line ``utt_id cluster ids...`` per utterance, at the model's 50 Hz frame rate.

    Lines go to ``out_path``.partial as they are made, and it is renamed to ``out_path`` at the
    end. A killed run, run again, keeps the partial file's whole lines and goes on after them,
    where it has the same ``settings`` (features and k-means model; kept in .partial.settings)."""
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    record = partial.with_name(partial.name + ".settings")
    if not partial.exists():
        record.unlink(missing_ok=True)
    _check_settings(record, settings, partial)
    entries = read_wav_scp(wav_scp)
    done = _labelled_utterances(partial, list(entries))
    with open(partial, "a", encoding="utf-8") as out:
        for utt_id, path in list(entries.items())[done:]:
            frames = features(load_audio(path, utt_id, MIN_SAMPLES)).numpy().astype(np.float32)
            labels = torch.from_numpy(km.predict(frames))
            if downsample:
                labels = mfcc_label_rate(labels)
            out.write(utt_id + " " + " ".join(map(str, labels.tolist())) + "\n")
            out.flush()
    os.replace(partial, out_path)
    record.unlink()


def _labelled_utterances(partial: Path, utt_ids) -> int:
    """How many utterances an earlier, killed label run finished: the whole lines of its
    partial file, which is cut after them (a line torn by the kill is dropped)."""
    if not partial.exists():
        return 0
    text = partial.read_text(encoding="utf-8")
    whole = text[: text.rfind("\n") + 1]
    done = [line.split(maxsplit=1)[0] for line in whole.splitlines()]
    if done != utt_ids[: len(done)]:
        raise ValueError(f"{partial} does not label the first utterances of this wav.scp in order; remove it")
    if whole != text:
        partial.write_text(whole, encoding="utf-8")
    if done:
        logging.info("%s: %d utterances labelled by an earlier run, going on after them", partial, len(done))
    return len(done)


def write_token_list(n_clusters: int, path: Union[str, Path]) -> None:
    """Cluster ids "0" ... "K-1", then ESPnet's "<unk>"."""
    Path(path).write_text("".join(f"{i}\n" for i in range(n_clusters)) + "<unk>\n")


def expected_frames(num_samples: int) -> int:
    return int(conv_output_lengths(torch.tensor([num_samples]), HUBERT_CONV_LAYERS)[0])


def check_labels(wav_scp: Union[str, Path], labels_path: Union[str, Path], n_clusters: int) -> int:
    """Every utterance of wav_scp has one integer label in [0, K) per model frame.

    Raises ValueError naming the first utterance that does not; returns the utterance count.
    """
    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise ValueError(f"label file {labels_path} is missing")
    labels = {}
    for number, line in enumerate(labels_path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [int(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{labels_path}:{number}: utterance {parts[0]} has a non-integer label") from None
        labels[parts[0]] = values
    entries = read_scp(wav_scp)
    for utt_id, path in entries:
        if utt_id not in labels:
            raise ValueError(f"{labels_path}: utterance {utt_id} has no labels")
        values = labels[utt_id]
        bad = [v for v in values if not 0 <= v < n_clusters]
        if bad:
            raise ValueError(f"{labels_path}: utterance {utt_id} has label {bad[0]} outside [0, {n_clusters})")
        frames = expected_frames(soundfile.info(path).frames)
        if abs(len(values) - frames) > 1:
            raise ValueError(
                f"{labels_path}: utterance {utt_id} has {len(values)} labels for {frames} frames"
            )
    return len(entries)

