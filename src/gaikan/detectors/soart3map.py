"""SOART3 map detector: SOART3 of each patch against the mean image (SOART.md §4)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._validation import Interval
from ..errors import ParameterError
from ..patches import extract, grid_shape
from ..taguchi.moments import Moments
from ..taguchi.mt import fit_gaussians, loo_mahalanobis, mahalanobis
from ..taguchi.soart import EPS, soart3
from .base import ClosedFormDetector

__all__ = ["SOART3Map"]


class SOART3Map(ClosedFormDetector):
    """Per-patch SOART3 against the unit-space mean image, then MT per patch.

    :meth:`soart_image` returns the three-channel "SOART image" of §4 (the
    input the seed articles fed to a Vision Transformer).

    Parameters
    ----------
    kernel, stride : int, default 10, 5
    eps : float, default 1e-4
    threshold_quantile : float, default 0.99
    threshold : float or None
    map_refine : {"pixel", "none"}, default "pixel"
        ``"pixel"`` multiplies the map by the pixel evidence (see
        :class:`~gaikan.detectors.base.BaseDetector`) so that its hottest
        pixel lies on the defect; ``"none"`` is the spec's map (mean D² of
        the covering windows).

    Attributes
    ----------
    mean_image_ : ndarray, shape (H, W)
    mean_ : ndarray, shape (P, 3)
    whiten_ : ndarray, shape (P, 3, 3)
    """

    _param_rules: ClassVar[dict[str, Any]] = {"eps": Interval("real", 0.0, None)}
    _caches: ClassVar[tuple[str, ...]] = ("_mp",)

    def __init__(
        self,
        kernel: int = 10,
        stride: int = 5,
        eps: float = EPS,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        map_refine: str = "pixel",
    ) -> None:
        self.kernel = kernel
        self.stride = stride
        self.eps = eps
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold
        self.map_refine = map_refine

    def _fit(self, X: np.ndarray) -> np.ndarray:
        grid_shape(X.shape[1:], self.kernel, self.stride)
        n = X.shape[0]
        self.mean_image_ = X.mean(axis=0)
        q = extract(X, self.kernel, self.stride)
        m = q.mean(axis=0)
        feats = soart3(q, m[None], self.eps)
        self.mean_, self.whiten_ = fit_gaussians(feats)
        loo_ref = (n * m[None] - q) / (n - 1)  # mean patches without image t
        loo = loo_mahalanobis(feats, soart3(q, loo_ref, self.eps))
        return loo.reshape(n, *self.grid_shape_)

    # -- the fit as merged per-batch statistics (ClosedFormDetector) ----------
    def _set_pixels(self, moments: Moments) -> None:
        super()._set_pixels(moments)
        self.mean_image_ = self.pixel_mean_
        self._drop_caches()

    def _reference_moments(self, X: np.ndarray) -> Moments:
        return Moments.of(extract(X, self.kernel, self.stride), "none")

    def _set_reference(self, moments: Moments) -> None:
        # the unit-space mean patches (as _fit: the mean of the patches, not
        # the patches of the mean image, which differ by rounding only)
        self._fit_ref = np.asarray(moments.mean, dtype=np.float64)

    def _fit_features(self, X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        q = extract(X, self.kernel, self.stride)
        m = self._fit_ref
        loo_ref = (n * m[None] - q) / (n - 1)
        return soart3(q, m[None], self.eps), soart3(q, loo_ref, self.eps)

    def _stage1(self, X: np.ndarray) -> np.ndarray:
        return soart3(extract(X, self.kernel, self.stride), self._mean_patches()[None], self.eps)

    def soart_image(self, X: Any) -> np.ndarray:
        """SOART image: (log β, log η, log γ) per patch, shape (n, nh, nw, 3)."""
        X = self._check_input(X)
        return self._stage1(X).reshape(X.shape[0], *self.grid_shape_, 3)

    def _mean_patches(self) -> np.ndarray:
        mp = self.__dict__.get("_mp")
        if mp is None:
            mp = self._mp = extract(self.mean_image_, self.kernel, self.stride)
        return mp

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        f = self._stage1(X)
        return mahalanobis(f, self.mean_, self.whiten_).reshape(X.shape[0], *self.grid_shape_)

    def _get_state(self):
        return {"mean_image": self.mean_image_, "mean": self.mean_, "whiten": self.whiten_}, {}

    def _set_state(self, arrays, meta):
        self.mean_image_ = arrays["mean_image"]
        self.mean_, self.whiten_ = arrays["mean"], arrays["whiten"]
        self._drop_caches()
        if self.mean_image_.shape != tuple(self.image_shape_):
            raise ParameterError("mean image shape does not match the image shape")
