"""HuBERT's pseudo-labels: k-means (scikit-learn) of frame features, and label files.

A label file is Kaldi-style text, ``utt_id l_1 l_2 ... l_T`` with one cluster id per 20 ms
model frame; ``check_labels`` verifies one against the audio before training.
"""

from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import joblib
import numpy as np
import soundfile
import torch
from sklearn.cluster import MiniBatchKMeans

from espnet_mamba.audio import iter_wav_scp, read_scp
from espnet_mamba.features import layer_features, mfcc_features, mfcc_label_rate
from espnet_mamba.nn.feature_extractor import HUBERT_CONV_LAYERS, conv_output_lengths

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
                  portion: float = 1.0, seed: int = 0) -> int:
    """Features of a random ``portion`` of the utterances -> out_dir/feats.npy (frames, D)
    and out_dir/lengths.tsv (utt_id frames). Returns the number of frames."""
    if not 0 < portion <= 1:
        raise ValueError(f"portion must be in (0, 1], got {portion}")
    entries = read_scp(wav_scp)
    rng = np.random.default_rng(seed)
    chosen = {utt for utt, _ in entries if rng.random() < portion} or {entries[0][0]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks, lines = [], []
    for utt_id, wav in iter_wav_scp(wav_scp):
        if utt_id in chosen:
            feats = features(wav).numpy().astype(np.float32)
            chunks.append(feats)
            lines.append(f"{utt_id} {len(feats)}\n")
    stacked = np.concatenate(chunks)
    np.save(out_dir / "feats.npy", stacked)
    (out_dir / "lengths.tsv").write_text("".join(lines))
    return len(stacked)


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
    joblib.dump(km, path)


def load_kmeans(path: Union[str, Path]) -> MiniBatchKMeans:
    km = joblib.load(path)
    if not isinstance(km, MiniBatchKMeans):
        raise ValueError(f"{path} does not hold a k-means model")
    return km


def write_labels(wav_scp, features: FeatureFn, downsample: bool, km: MiniBatchKMeans,
                 out_path: Union[str, Path]) -> None:
    """One line ``utt_id cluster ids...`` per utterance, at the model's 50 Hz frame rate."""
    with open(out_path, "w", encoding="utf-8") as out:
        for utt_id, wav in iter_wav_scp(wav_scp):
            labels = torch.from_numpy(km.predict(features(wav).numpy().astype(np.float32)))
            if downsample:
                labels = mfcc_label_rate(labels)
            out.write(utt_id + " " + " ".join(map(str, labels.tolist())) + "\n")


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

