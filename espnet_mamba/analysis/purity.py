"""How well discrete units (k-means clusters of frame features) match phones, as in the HuBERT
paper: from the joint distribution p(phone, unit) over frames,

* phone purity   = E_unit [max_phone p(phone | unit)]   (how pure each unit is),
* cluster purity = E_phone [max_unit p(unit | phone)]   (how concentrated each phone is),
* PNMI           = I(phone; unit) / H(phone)            (the share of phone uncertainty a unit
  removes; 1 when the unit determines the phone, 0 when they are independent).
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
from sklearn.cluster import MiniBatchKMeans


@dataclass(frozen=True)
class PurityResult:
    phone_purity: float
    cluster_purity: float
    pnmi: float


METRICS = ("phone_purity", "cluster_purity", "pnmi")


def _check_ids(name: str, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of integer ids, got dtype {ids.dtype} and shape {ids.shape}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} must be non-negative ids, got {ids.min()}")
    return ids


def joint_distribution(phones: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per-frame phone ids (N,) and unit ids (N,) -> p(phone, unit), shape (max phone + 1,
    max unit + 1), summing to 1."""
    phones, units = _check_ids("phones", phones), _check_ids("units", units)
    if phones.shape != units.shape:
        raise ValueError(f"phones and units must have one id per frame, got {phones.shape} and {units.shape}")
    if phones.size == 0:
        raise ValueError("no frames: phones and units are empty")
    counts = np.zeros((phones.max() + 1, units.max() + 1))
    np.add.at(counts, (phones, units), 1)
    return counts / counts.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def purity_from_joint(joint: np.ndarray) -> PurityResult:
    """The three metrics of a joint distribution p(phone, unit) (phones x units)."""
    p_phone, p_unit = joint.sum(1), joint.sum(0)
    phone_purity = float(joint.max(0).sum())  # sum_u p(u) max_y p(y|u) = sum_u max_y p(y, u)
    cluster_purity = float(joint.max(1).sum())
    h_phone = _entropy(p_phone)
    mutual_information = h_phone + _entropy(p_unit) - _entropy(joint.ravel())
    pnmi = mutual_information / h_phone if h_phone > 0 else 0.0
    return PurityResult(phone_purity, cluster_purity, pnmi)


def purity(phones: np.ndarray, units: np.ndarray) -> PurityResult:
    """Phone purity, cluster purity and PNMI of per-frame phone ids and unit ids (N,)."""
    return purity_from_joint(joint_distribution(phones, units))


def cluster_units(features: np.ndarray, n_clusters: int, seed: int = 0, batch_size: int = 10000) -> np.ndarray:
    """K-means units of frame features (N, D): MiniBatchKMeans fitted on them -> ids (N,)."""
    if features.ndim != 2 or len(features) < n_clusters:
        raise ValueError(f"need at least n_clusters={n_clusters} frames (N, D), got shape {features.shape}")
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, n_init=3, random_state=seed)
    return kmeans.fit_predict(np.asarray(features, dtype=np.float32))


def layerwise_purity(
    layers: Sequence[np.ndarray],
    phones: np.ndarray,
    n_clusters: int = 100,
    seed: int = 0,
    mask: Optional[np.ndarray] = None,
) -> List[PurityResult]:
    """For each layer's frame features (N, D): k-means units, then their purity against the
    phone ids (N,). ``mask`` (N,) bool keeps only the frames it marks (e.g. the labelled ones)."""
    phones = _check_ids("phones", np.asarray(phones) if mask is None else np.asarray(phones)[mask])
    results = []
    for features in layers:
        features = features if mask is None else features[mask]
        if len(features) != len(phones):
            raise ValueError(f"layer features have {len(features)} frames but there are {len(phones)} phone labels")
        results.append(purity(phones, cluster_units(features, n_clusters, seed)))
    return results
