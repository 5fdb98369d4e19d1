"""SOART3 map detector: SOART3 of each patch against the mean image (SOART.md §4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..patches import extract, grid_shape
from ..taguchi.mt import fit_gaussians, loo_mahalanobis, mahalanobis
from ..taguchi.soart import EPS, soart3
from .base import BaseDetector

__all__ = ["SOART3Map"]


class SOART3Map(BaseDetector):
    """Per-patch SOART3 against the unit-space mean image, then MT per patch.

    :meth:`soart_image` returns the three-channel "SOART image" of §4 (the
    input the seed articles fed to a Vision Transformer).

    Parameters
    ----------
    kernel, stride : int, default 10, 5
    eps : float, default 1e-4
    threshold_quantile : float, default 0.99
    threshold : float or None

    Attributes
    ----------
    mean_image_ : ndarray, shape (H, W)
    mean_ : ndarray, shape (P, 3)
    whiten_ : ndarray, shape (P, 3, 3)
    """

    kind = "soart3map"

    def __init__(
        self,
        kernel: int = 10,
        stride: int = 5,
        eps: float = EPS,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
    ) -> None:
        self.kernel = kernel
        self.stride = stride
        self.eps = eps
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold

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

    def _stage1(self, X: np.ndarray) -> np.ndarray:
        return soart3(extract(X, self.kernel, self.stride), self._mean_patches()[None], self.eps)

    def soart_image(self, X: Any) -> np.ndarray:
        """SOART image: (log β, log η, log γ) per patch, shape (n, nh, nw, 3)."""
        X = self._check_input(X)
        return self._stage1(X).reshape(X.shape[0], *self.grid_shape_, 3)

    def _mean_patches(self) -> np.ndarray:
        if getattr(self, "_mp", None) is None:
            self._mp = extract(self.mean_image_, self.kernel, self.stride)
        return self._mp

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        f = self._stage1(X)
        return mahalanobis(f, self.mean_, self.whiten_).reshape(X.shape[0], *self.grid_shape_)

    def _get_state(self):
        return {"mean_image": self.mean_image_, "mean": self.mean_, "whiten": self.whiten_}, {}

    def _set_state(self, arrays, meta):
        self.mean_image_ = arrays["mean_image"]
        self.mean_, self.whiten_ = arrays["mean"], arrays["whiten"]
        self._mp = None
        if self.mean_image_.shape != tuple(self.image_shape_):
            raise ValueError("mean image shape does not match the image shape")
