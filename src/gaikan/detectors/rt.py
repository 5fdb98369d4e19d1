"""Classic RT (Recognition-Taguchi) per patch (SOART.md §3)."""

from __future__ import annotations

import numpy as np

from ..patches import extract, grid_shape
from ..taguchi.moments import Moments
from ..taguchi.mt import fit_gaussians, loo_mahalanobis, mahalanobis
from ..taguchi.rt import rt_features
from .base import ClosedFormDetector

__all__ = ["RTDetector"]


class RTDetector(ClosedFormDetector):
    """One RT unit space per patch position: D² of (β, √V_e) per patch.

    Parameters
    ----------
    kernel, stride : int, default 10, 5
    threshold_quantile : float, default 0.99
    threshold : float or None
    map_refine : {"pixel", "none"}, default "pixel"
        ``"pixel"`` multiplies the map by the pixel evidence (see
        :class:`~gaikan.detectors.base.BaseDetector`) so that its hottest
        pixel lies on the defect; ``"none"`` is the spec's map (mean D² of
        the covering windows).

    Attributes
    ----------
    mean_patches_ : ndarray, shape (P, k²)
        Unit-space mean vector of each patch position.
    mean_ : ndarray, shape (P, 2)
    whiten_ : ndarray, shape (P, 2, 2)
    """

    def __init__(
        self,
        kernel: int = 10,
        stride: int = 5,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        map_refine: str = "pixel",
    ) -> None:
        self.kernel = kernel
        self.stride = stride
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold
        self.map_refine = map_refine

    def _fit(self, X: np.ndarray) -> np.ndarray:
        grid_shape(X.shape[1:], self.kernel, self.stride)
        n = X.shape[0]
        q = extract(X, self.kernel, self.stride)
        self.mean_patches_ = q.mean(axis=0)
        feats = rt_features(q, self.mean_patches_[None])
        self.mean_, self.whiten_ = fit_gaussians(feats)
        loo_ref = (n * self.mean_patches_[None] - q) / (n - 1)
        loo = loo_mahalanobis(feats, rt_features(q, loo_ref))
        return loo.reshape(n, *self.grid_shape_)

    # -- the fit as merged per-batch statistics (ClosedFormDetector) ----------
    def _reference_moments(self, X: np.ndarray) -> Moments:
        return Moments.of(extract(X, self.kernel, self.stride), "none")

    def _set_reference(self, moments: Moments) -> None:
        self.mean_patches_ = np.asarray(moments.mean, dtype=np.float64)

    def _fit_features(self, X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        q = extract(X, self.kernel, self.stride)
        loo_ref = (n * self.mean_patches_[None] - q) / (n - 1)
        return rt_features(q, self.mean_patches_[None]), rt_features(q, loo_ref)

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        f = rt_features(extract(X, self.kernel, self.stride), self.mean_patches_[None])
        return mahalanobis(f, self.mean_, self.whiten_).reshape(X.shape[0], *self.grid_shape_)

    def _get_state(self):
        return {"mean_patches": self.mean_patches_, "mean": self.mean_, "whiten": self.whiten_}, {}

    def _set_state(self, arrays, meta):
        self.mean_patches_ = arrays["mean_patches"]
        self.mean_, self.whiten_ = arrays["mean"], arrays["whiten"]
