"""Classic Recognition-Taguchi (RT) method (``SOART.md`` §3).

Against a unit-space mean m (r = m·m) a sample y gives
Y1 = β = m·y / r and Y2 = √V_e with V_e = (y·y − (m·y)²/r)/(k − 1).
The RT distance is ``D² = ½ (Y − Ȳ)ᵀ C⁻¹ (Y − Ȳ)``: the MT method on the
two items (Y1, Y2), which is why this module reuses :mod:`.mt`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .mt import fit_gaussians, mahalanobis

__all__ = ["RTUnitSpace", "rt_features"]


def rt_features(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    """RT items (Y1, Y2) of samples y against unit-space means m.

    Parameters
    ----------
    y, m : ndarray, shape (..., k)
        Broadcast over the leading axes; k ≥ 2.

    Returns
    -------
    ndarray, shape (..., 2): β and √V_e.
    """
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    k = y.shape[-1]
    if k < 2:
        raise ParameterError("RT needs vectors of length >= 2")
    r = np.einsum("...i,...i->...", m, m)
    # An all-zero mean (a black patch in every good image) leaves β
    # undefined; take r = 1 there, so β = 0 and V_e = S_T/(k − 1).
    r = np.where(r > 0, r, 1.0)
    big_l = np.einsum("...i,...i->...", m, y)
    s_t = np.einsum("...i,...i->...", y, y)
    s_e = s_t - big_l**2 / r
    # S_e >= 0 mathematically (Cauchy–Schwarz); clip rounding below zero.
    v_e = np.maximum(s_e, 0.0) / (k - 1)
    return np.stack(np.broadcast_arrays(big_l / r, np.sqrt(v_e)), axis=-1)


class RTUnitSpace:
    """RT unit space on plain vectors.

    Attributes
    ----------
    mean_ : ndarray, shape (k,)
    y_mean_ : ndarray, shape (2,)
    whiten_ : ndarray, shape (2, 2)
    """

    def __init__(self, reg_rel: float = 1e-6, reg_abs: float = 1e-12) -> None:
        self.reg_rel = reg_rel
        self.reg_abs = reg_abs

    def fit(self, X: np.ndarray) -> RTUnitSpace:
        """Fit on unit-space samples X, shape (n, k)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 3:
            raise ParameterError(f"X must be (n >= 3, k), got {x.shape}")
        self.mean_ = x.mean(axis=0)
        y = rt_features(x, self.mean_)
        mean, whiten = fit_gaussians(y[:, None, :], self.reg_rel, self.reg_abs)
        self.y_mean_, self.whiten_ = mean[0], whiten[0]
        return self

    def distance(self, Y: np.ndarray) -> np.ndarray:
        """RT distance D² of samples Y, shape (m, k) → (m,)."""
        y = rt_features(np.atleast_2d(Y), self.mean_)
        return mahalanobis(y[:, None, :], self.y_mean_[None], self.whiten_[None])[:, 0]
