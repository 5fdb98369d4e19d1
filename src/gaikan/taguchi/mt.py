"""Mahalanobis–Taguchi (MT) unit spaces, plain and per position.

The MT method scores a sample by its Mahalanobis distance to a unit space
of good samples, divided by the number of items k:
``D² = (y − μ)ᵀ Σ⁻¹ (y − μ) / k`` (equivalently ``zᵀ R⁻¹ z / k`` on
standardised items with correlation matrix R).  SOARTC's stage 2 is MT on
three features per patch, classic RT's is MT on (Y1, Y2), and PaDiM is MT
on deep features per position — all share :func:`fit_gaussians` and
:func:`mahalanobis`.  Inverses are never formed: each covariance is
factored by Cholesky and samples are whitened by a triangular solve.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .moments import Moments

__all__ = [
    "MTUnitSpace",
    "fit_gaussians",
    "gaussians_from_moments",
    "loo_mahalanobis",
    "loo_mahalanobis_from",
    "mahalanobis",
    "regularise_covariance",
]


def regularise_covariance(cov: np.ndarray, reg_rel: float, reg_abs: float) -> np.ndarray:
    """``Σ + (reg_rel·trace(Σ)/m + reg_abs)·I``, batched over leading axes."""
    m = cov.shape[-1]
    tr = np.trace(cov, axis1=-2, axis2=-1)
    lam = reg_rel * tr / m + reg_abs
    return cov + lam[..., None, None] * np.eye(m)


def _whitener(cov: np.ndarray) -> np.ndarray:
    """Inverse of the lower Cholesky factor, batched: D² = ‖L⁻¹ (y − μ)‖²."""
    chol = np.linalg.cholesky(cov)
    eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    return np.linalg.solve(chol, eye)


def fit_gaussians(
    features: np.ndarray, reg_rel: float = 1e-6, reg_abs: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and whitening matrix of one Gaussian per position.

    Covariance with ddof = 1, regularised as
    ``Σ + (reg_rel·trace(Σ)/m + reg_abs)·I`` (SOART.md §5 uses 1e-6, 1e-12).

    Parameters
    ----------
    features : ndarray, shape (n, P, m)
        n unit-space samples, P positions, m items.

    Returns
    -------
    mean : ndarray, shape (P, m)
    whiten : ndarray, shape (P, m, m)
        Lower-triangular ``L⁻¹`` with ``L Lᵀ = Σ_reg``.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3:
        raise ParameterError(f"features must be (n, P, m), got {f.shape}")
    n = f.shape[0]
    if n < 2:
        raise ParameterError("a unit space needs at least 2 samples for a covariance")
    mean = f.mean(axis=0)
    dev = f - mean
    cov = np.einsum("npi,npj->pij", dev, dev) / (n - 1)
    return mean, _whitener(regularise_covariance(cov, reg_rel, reg_abs))


def mahalanobis(features: np.ndarray, mean: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """MT distance D² = (f − μ)ᵀ Σ⁻¹ (f − μ) / m at every position.

    Parameters
    ----------
    features : ndarray, shape (n, P, m)
    mean : ndarray, shape (P, m)
    whiten : ndarray, shape (P, m, m)

    Returns
    -------
    ndarray, shape (n, P)
    """
    dev = np.asarray(features, dtype=np.float64) - mean
    z = np.einsum("pij,npj->npi", whiten, dev)
    return np.einsum("npi,npi->np", z, z) / mean.shape[-1]


def loo_mahalanobis(
    features: np.ndarray,
    loo_features: np.ndarray | None = None,
    reg_rel: float = 1e-6,
    reg_abs: float = 1e-12,
    chunk: int = 16,
) -> np.ndarray:
    """Leave-one-out MT distances of a unit space's own samples.

    For each sample t the Gaussian is refitted without t (closed form: the
    scatter matrix minus t's rank-one term) and t is scored against it.

    Parameters
    ----------
    features : ndarray, shape (n, P, m)
        Unit-space features, the Gaussian is fitted on these.
    loo_features : ndarray, shape (n, P, m), optional
        What to score for each t (e.g. t's features against a stage-1
        reference that also leaves t out); defaults to ``features``.

    Returns
    -------
    ndarray, shape (n, P)
    """
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    if n < 3:
        raise ParameterError("leave-one-out needs at least 3 samples")
    mean = f.mean(axis=0)
    dev = f - mean
    scatter = np.einsum("npi,npj->pij", dev, dev)
    return loo_mahalanobis_from(f, loo_features, mean, scatter, n, reg_rel, reg_abs, chunk)


def gaussians_from_moments(
    moments: Moments, reg_rel: float = 1e-6, reg_abs: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fit_gaussians` from merged statistics instead of the samples.

    Parameters
    ----------
    moments : Moments
        ``"outer"`` statistics of features (n, P, m): mean (P, m), scatter (P, m, m).

    Returns
    -------
    mean : ndarray, shape (P, m)
    whiten : ndarray, shape (P, m, m)
    """
    if moments.n < 2:
        raise ParameterError("a unit space needs at least 2 samples for a covariance")
    cov = moments.covariance()
    return moments.mean, _whitener(regularise_covariance(cov, reg_rel, reg_abs))


def loo_mahalanobis_from(
    features: np.ndarray,
    loo_features: np.ndarray | None,
    mean: np.ndarray,
    scatter: np.ndarray,
    n: int,
    reg_rel: float = 1e-6,
    reg_abs: float = 1e-12,
    chunk: int = 16,
) -> np.ndarray:
    """Leave-one-out MT distances of some of a unit space's samples.

    The part of :func:`loo_mahalanobis` that needs only the samples being
    scored and the whole unit space's statistics, so batches of samples can
    be scored anywhere once those are known (a distributed fit).

    Parameters
    ----------
    features : ndarray, shape (b, P, m)
        Some of the unit space's samples.
    loo_features : ndarray, shape (b, P, m), optional
        What to score for each of them (defaults to ``features``).
    mean : ndarray, shape (P, m)
        Mean of all n samples.
    scatter : ndarray, shape (P, m, m)
        Centred scatter ``Σ (f − μ)(f − μ)ᵀ`` of all n samples.
    n : int
        Unit-space size, n ≥ 3.

    Returns
    -------
    ndarray, shape (b, P)
    """
    f = np.asarray(features, dtype=np.float64)
    g = f if loo_features is None else np.asarray(loo_features, dtype=np.float64)
    b, p, m = f.shape
    if n < 3:
        raise ParameterError("leave-one-out needs at least 3 samples")
    dev = f - mean
    out = np.empty((b, p))
    for t0 in range(0, b, chunk):
        t1 = min(b, t0 + chunk)
        d = dev[t0:t1]
        mean_t = (n * mean - f[t0:t1]) / (n - 1)
        cov_t = (scatter - (n / (n - 1)) * np.einsum("tpi,tpj->tpij", d, d)) / (n - 2)
        wt = _whitener(regularise_covariance(cov_t, reg_rel, reg_abs))
        z = np.einsum("tpij,tpj->tpi", wt, g[t0:t1] - mean_t)
        out[t0:t1] = np.einsum("tpi,tpi->tp", z, z) / m
    return out


class MTUnitSpace:
    """The MT method on plain vectors.

    Parameters
    ----------
    reg_rel, reg_abs : float
        Ridge on the covariance, see :func:`fit_gaussians`.

    Attributes
    ----------
    mean_ : ndarray, shape (k,)
    std_ : ndarray, shape (k,)
    whiten_ : ndarray, shape (k, k)
    """

    def __init__(self, reg_rel: float = 1e-6, reg_abs: float = 1e-12) -> None:
        self.reg_rel = reg_rel
        self.reg_abs = reg_abs

    def fit(self, X: np.ndarray) -> MTUnitSpace:
        """Fit on unit-space samples X, shape (n, k)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ParameterError(f"X must be (n >= 2, k), got {x.shape}")
        mean, whiten = fit_gaussians(x[:, None, :], self.reg_rel, self.reg_abs)
        self.mean_, self.whiten_ = mean[0], whiten[0]
        self.std_ = x.std(axis=0, ddof=1)
        return self

    def distance(self, Y: np.ndarray) -> np.ndarray:
        """MT distance D² of samples Y, shape (m, k) → (m,)."""
        y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        return mahalanobis(y[:, None, :], self.mean_[None], self.whiten_[None])[:, 0]
