"""The SOART family as plain functions (arrays in, arrays out).

A flat public twin of :mod:`gaikan.taguchi` for the names used in the
spec (``../docs/SOART.md``): ``soart3`` on vectors and batched over rows,
the classic ``RT`` and ``MT`` unit spaces, the SOART3 map and the SOARTC
stage-1 features.
"""

from __future__ import annotations

import numpy as np

from .patches import extract, grid_shape
from .taguchi.mt import MTUnitSpace as MT
from .taguchi.rt import RTUnitSpace as RT
from .taguchi.rt import rt_features
from .taguchi.soart import EPS, mean_self_similarity, self_similarity, soart3, soartc_features

__all__ = [
    "EPS",
    "MT",
    "RT",
    "mean_self_similarity",
    "rt_features",
    "self_similarity",
    "soart3",
    "soart3_map",
    "soartc_features",
]


def soart3_map(
    images: np.ndarray, mean_image: np.ndarray, kernel: int = 10, stride: int = 5, eps: float = EPS
) -> np.ndarray:
    """SOART image (SOART.md §4): SOART3 of every patch against the mean image's.

    Parameters
    ----------
    images : ndarray, shape (n, H, W)
    mean_image : ndarray, shape (H, W)

    Returns
    -------
    ndarray, shape (n, nh, nw, 3)
    """
    x = np.asarray(images, dtype=np.float64)
    m = np.asarray(mean_image, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != m.shape:
        raise ValueError(f"images {x.shape} and mean image {m.shape} do not match")
    nh, nw = grid_shape(m.shape, kernel, stride)
    f = soart3(extract(x, kernel, stride), extract(m, kernel, stride)[None], eps)
    return f.reshape(x.shape[0], nh, nw, 3)
