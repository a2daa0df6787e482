"""Projection-weighted canonical correlation analysis (PWCCA, Morcos et al. 2018) between a
layer's frame features and labels, as in the layer-wise analysis of Pasad et al.

CCA finds pairs of directions, one in each view, whose projections correlate most; the
canonical correlations rho_1 >= rho_2 >= ... measure how much the views share. PWCCA averages
them with weights alpha_i = sum_j |<h_i, x_j>| (h_i the i-th canonical variate of the layer,
orthonormalised; x_j the j-th feature dimension of the centred layer), normalised to sum 1:
directions that account for more of the layer's activity count more.

The covariances carry a ridge ``eps`` times their mean variance, so that nearly constant
dimensions do not produce spurious perfect correlations.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

RANK_TOL = 1e-8  # singular values below this fraction of the largest are treated as zero


@dataclass(frozen=True)
class CCAResult:
    """Canonical correlations (k,), largest first, and their PWCCA weights (k,), summing to 1."""

    correlations: np.ndarray
    weights: np.ndarray

    @property
    def pwcca(self) -> float:
        return float(self.weights @ self.correlations)


def one_hot(ids: np.ndarray) -> np.ndarray:
    """Integer ids (N,) -> one-hot rows (N, number of distinct ids); unused ids get no column."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"label ids must be a 1-D integer array, got dtype {ids.dtype} and shape {ids.shape}")
    _, dense = np.unique(ids, return_inverse=True)
    out = np.zeros((len(ids), dense.max(initial=-1) + 1))
    out[np.arange(len(ids)), dense] = 1.0
    return out


def _whitened_basis(x: np.ndarray, eps: float):
    """Centred x (N, D) -> an orthonormal basis U (N, r) of its columns, the ridge shrinkage
    s / sqrt(s^2 + N * ridge) of each basis direction (r,), and the thin SVD's s (r,), V (D, r)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * RANK_TOL if s.size and s[0] > 0 else np.zeros_like(s, dtype=bool)
    u, s, v = u[:, keep], s[keep], vt[keep].T
    ridge = eps * (s**2).sum() / (len(x) * x.shape[1])  # eps times the mean variance
    return u, s / np.sqrt(s**2 + len(x) * ridge), s, v


def cca(layer: np.ndarray, labels: np.ndarray, eps: float = 1e-6) -> CCAResult:
    """CCA of frame features ``layer`` (N, D) with ``labels`` (N, K) (one-hot or embedded),
    with PWCCA weights taken from the layer's side. Raises ValueError on mismatched or
    constant inputs."""
    x, y = np.asarray(layer, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"layer and labels must be (N, D) and (N, K) with the same N, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"CCA needs at least 2 frames, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("layer features or labels contain NaN or Inf")
    x, y = x - x.mean(0), y - y.mean(0)
    ux, fx, sx, vx = _whitened_basis(x, eps)
    uy, fy, _, _ = _whitened_basis(y, eps)
    if ux.shape[1] == 0 or uy.shape[1] == 0:
        raise ValueError("layer features or labels are constant over all frames: no correlation to measure")
    p, correlations, _ = np.linalg.svd(fx[:, None] * (ux.T @ uy) * fy[None, :], full_matrices=False)
    variates, _ = np.linalg.qr(ux @ (fx[:, None] * p))  # (N, k), orthonormal canonical variates
    # <q_i, x_j> for every feature j: x^T q = V diag(s) U^T q
    alignment = np.abs(vx @ (sx[:, None] * (ux.T @ variates)))  # (D, k)
    weights = alignment.sum(0)
    return CCAResult(np.clip(correlations, 0.0, 1.0), weights / weights.sum())


def layerwise_pwcca(
    layers: Sequence[np.ndarray],
    labels: np.ndarray,
    mask: Optional[np.ndarray] = None,
    max_frames: Optional[int] = None,
    seed: int = 0,
    eps: float = 1e-6,
) -> List[float]:
    """PWCCA of each layer's frame features (N, D) with labels: integer ids (N,) (one-hot
    encoded here) or an embedding (N, K). ``mask`` (N,) keeps the frames it marks; then at
    most ``max_frames`` of them, drawn at random, are used."""
    labels = np.asarray(labels)
    keep = np.arange(len(labels)) if mask is None else np.flatnonzero(mask)
    if max_frames is not None and len(keep) > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_frames, replace=False))
    targets = one_hot(labels[keep]) if labels.ndim == 1 else labels[keep]
    results = []
    for features in layers:
        if len(features) != len(labels):
            raise ValueError(f"layer features have {len(features)} frames but there are {len(labels)} labels")
        results.append(cca(features[keep], targets, eps).pwcca)
    return results
