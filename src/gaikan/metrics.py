"""Evaluation metrics: image AUROC, pixel AUROC, ROC curves.

AUROC is computed exactly as the Mann–Whitney U statistic with average
ranks for ties (no sampling, no thresholds grid), so it matches
``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["pixel_roc_auc", "robust_outliers", "roc_auc", "roc_curve"]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; labels 1 = defect (positive), scores higher = worse.

    Parameters
    ----------
    labels : array-like of {0, 1} or bool, shape (n,)
    scores : array-like of float, shape (n,)

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        If only one class is present or shapes differ.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.size} vs {s.size}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both good and defective samples")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pixel_roc_auc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC over all pixels of all images.

    Parameters
    ----------
    masks : array-like of bool, shape (n, H, W)
        True on defect pixels.
    maps : array-like of float, shape (n, H, W)
        Anomaly maps, higher = worse.
    """
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.shape != a.shape:
        raise ValueError(f"masks {m.shape} and maps {a.shape} differ in shape")
    return roc_auc(m.ravel(), a.ravel())


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve points.

    Returns
    -------
    fpr, tpr : ndarray, shape (k,)
        From (0, 0) to (1, 1).
    thresholds : ndarray, shape (k,)
        A sample is flagged when its score is >= the threshold
        (the first threshold is +inf).
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(1, int(y.sum())), max(1, int((~y).sum()))
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def robust_outliers(scores: np.ndarray, z: float = 6.0) -> np.ndarray:
    """Indices of scores that stand far above the rest, on a log scale.

    Anomaly scores of good parts are skewed (D² values), so the test runs
    on ``log(score)``: an image is an outlier when its log score exceeds
    the median by more than ``z`` robust standard deviations (1.4826 ×
    the median absolute deviation).  Used to warn when a unit space holds
    defective parts, which push the threshold up.

    Parameters
    ----------
    scores : ndarray, shape (n,)
        Leave-one-out scores of the unit space (higher = worse), > 0.
    z : float

    Returns
    -------
    ndarray of int
    """
    s = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-300))
    if s.size < 5:
        return np.empty(0, dtype=int)
    med = np.median(s)
    mad = 1.4826 * np.median(np.abs(s - med))
    spread = max(mad, 0.05 * abs(med), 1e-9)
    return np.flatnonzero((s - med) / spread > z)
