"""Evaluation metrics: image AUROC, pixel AUROC, ROC curves.

AUROC is computed exactly as the Mann–Whitney U statistic with average
ranks for ties (no sampling, no thresholds grid), so it matches
``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from .errors import ParameterError

__all__ = ["pixel_aupro", "pixel_roc_auc", "pro_curve", "robust_outliers", "roc_auc", "roc_curve"]


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
        raise ParameterError(f"labels and scores differ in size: {y.size} vs {s.size}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ParameterError("AUROC needs both good and defective samples")
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
        raise ParameterError(f"masks {m.shape} and maps {a.shape} differ in shape")
    return roc_auc(m.ravel(), a.ravel())


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) against the false positive rate, every threshold.

    As in MVTec AD: each connected defect region (8-connectivity) of each
    mask counts once, whatever its size; at a threshold, PRO is the mean
    over regions of the share of the region's pixels at or above it, and
    the FPR is the share of defect-free pixels (of all images) at or above
    it.

    Parameters
    ----------
    masks : array-like of bool, shape (n, H, W)
    maps : array-like of float, shape (n, H, W)
        Higher = worse.

    Returns
    -------
    fpr, pro : ndarray, shape (k,)
        From (0, 0) to (1, 1), one point per distinct map value.
    """
    from scipy import ndimage

    m = np.asarray(masks).astype(bool)
    a = np.asarray(maps, dtype=np.float64)
    if m.shape != a.shape or m.ndim != 3:
        raise ParameterError(f"masks {m.shape} and maps {a.shape} must both be (n, H, W)")
    weight = np.zeros(m.shape)
    n_regions = 0
    for i in range(m.shape[0]):
        lab, k = ndimage.label(m[i], structure=np.ones((3, 3)))
        if k:
            sizes = np.bincount(lab.ravel())[1:]
            weight[i][lab > 0] = 1.0 / sizes[lab[lab > 0] - 1]
        n_regions += k
    normal = ~m.ravel()
    if n_regions == 0 or not normal.any():
        raise ParameterError("AUPRO needs defect regions and defect-free pixels")
    order = np.argsort(-a.ravel(), kind="mergesort")
    s = a.ravel()[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # ties: one point per value
    fpr = np.cumsum(normal[order])[last] / normal.sum()
    pro = np.cumsum(weight.ravel()[order])[last] / n_regions
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def pixel_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by it (MVTec AD's AUPRO).

    Parameters
    ----------
    masks : array-like of bool, shape (n, H, W)
    maps : array-like of float, shape (n, H, W)
    fpr_limit : float
        Integration limit on the false positive rate (0.3 as in MVTec AD).

    Returns
    -------
    float in [0, 1]
    """
    fpr, pro = pro_curve(masks, maps)
    end = np.interp(fpr_limit, fpr, pro)
    keep = fpr <= fpr_limit
    x = np.r_[fpr[keep], fpr_limit]
    y = np.r_[pro[keep], end]
    return float(np.trapezoid(y, x) / fpr_limit)


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
