"""SOART3, the SOART image and the SOARTC self-similarity stage (``SOART.md`` §2, §4, §5).

Functions take and return arrays.  The hot path of SOARTC (one Gram matrix
per image, then SOART3 of every row of the self-similarity matrix against
the unit-space mean) runs through a fused numba kernel when numba is
importable and through plain numpy otherwise; both agree to rounding.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = [
    "BETA_FLOOR",
    "EPS",
    "mean_self_similarity",
    "self_similarity",
    "soart3",
    "soart3_map",
    "soartc_features",
]

#: The original articles' constant ε.
EPS = 1e-4
#: Floor applied to β before its logarithm.
BETA_FLOOR = 1e-12


def soart3(y: np.ndarray, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """SOART3(y | x): (log β, log η, log γ) of signal ``y`` against ``x``.

    Parameters
    ----------
    y, x : ndarray, shape (..., d)
        Broadcast against each other over the leading axes.
    eps : float
        The ε of the spec.

    Returns
    -------
    ndarray, shape (..., 3), float64
        ``log max(β, 1e-12)``, ``log(η + 1)``, ``log(ν + 1) − log(η + 1)``
        with β = (x·y + ε)/(x·x + ε), r = y − βx, η = Σ|r|, ν = max|r|.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if y.shape[-1] != x.shape[-1]:
        raise ParameterError(f"y and x differ in length: {y.shape[-1]} vs {x.shape[-1]}")
    if y.shape[-1] == 0:
        raise ParameterError("soart3 needs non-empty vectors")
    beta = (np.einsum("...i,...i->...", x, y) + eps) / (np.einsum("...i,...i->...", x, x) + eps)
    r = np.abs(y - beta[..., None] * x)
    log_eta = np.log(r.sum(axis=-1) + 1.0)
    log_nu = np.log(r.max(axis=-1) + 1.0)
    return np.stack([np.log(np.maximum(beta, BETA_FLOOR)), log_eta, log_nu - log_eta], axis=-1)


def soart3_map(
    images: np.ndarray, mean_image: np.ndarray, kernel: int = 10, stride: int = 5, eps: float = EPS
) -> np.ndarray:
    """SOART image (SOART.md §4): SOART3 of every patch against the mean image's.

    (Moved here from the former flat module ``gaikan.soart``, unchanged.)

    Parameters
    ----------
    images : ndarray, shape (n, H, W)
    mean_image : ndarray, shape (H, W)

    Returns
    -------
    ndarray, shape (n, nh, nw, 3)
    """
    from ..patches import extract, grid_shape

    x = np.asarray(images, dtype=np.float64)
    m = np.asarray(mean_image, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != m.shape:
        raise ParameterError(f"images {x.shape} and mean image {m.shape} do not match")
    nh, nw = grid_shape(m.shape, kernel, stride)
    f = soart3(extract(x, kernel, stride), extract(m, kernel, stride)[None], eps)
    return f.reshape(x.shape[0], nh, nw, 3)


def self_similarity(patches: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Self-similarity matrix S[i, j] = (p_i·p_j + ε)/(p_j·p_j + ε).

    Parameters
    ----------
    patches : ndarray, shape (..., P, d)

    Returns
    -------
    ndarray, shape (..., P, P), float64
    """
    q = np.asarray(patches, dtype=np.float64)
    g = q @ np.swapaxes(q, -1, -2)
    diag = np.einsum("...ii->...i", g)
    return (g + eps) / (diag[..., None, :] + eps)


def mean_self_similarity(patches: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Mean self-similarity matrix S̄ over a unit space, in one matrix product.

    ``Σ_t (G_t + ε) W_t`` with ``W_t = diag(1/(diag G_t + ε))`` equals
    ``A Bᵀ + ε·1·(Σ_t w_t)ᵀ`` with A the patches of all images side by side
    and B the same patches scaled by ``w_t`` — one GEMM instead of n.

    Parameters
    ----------
    patches : ndarray, shape (n, P, d)

    Returns
    -------
    ndarray, shape (P, P), float64
    """
    q = np.asarray(patches, dtype=np.float64)
    n, p, d = q.shape
    w = 1.0 / (np.einsum("npd,npd->np", q, q) + eps)  # (n, P)
    a = q.transpose(1, 0, 2).reshape(p, n * d)
    b = (q * w[:, :, None]).transpose(1, 0, 2).reshape(p, n * d)
    total = a @ b.T
    total += eps * w.sum(axis=0)[None, :]
    return total / n


def _features_numpy(
    g: np.ndarray, w: np.ndarray, sbar: np.ndarray, xx: np.ndarray, eps: float, loo_n: int
) -> np.ndarray:
    s = (g + eps) * w[:, None, :]
    if loo_n:
        ref = (loo_n * sbar[None] - s) / (loo_n - 1)
        xxr = np.einsum("nij,nij->ni", ref, ref)
    else:
        ref = sbar[None]
        xxr = xx[None]
    beta = (np.einsum("nij,nij->ni", ref, s) + eps) / (xxr + eps)
    r = np.abs(s - beta[..., None] * ref)
    log_eta = np.log(r.sum(axis=-1) + 1.0)
    log_nu = np.log(r.max(axis=-1) + 1.0)
    return np.stack([np.log(np.maximum(beta, BETA_FLOOR)), log_eta, log_nu - log_eta], axis=-1)


def _block_rows(n_img: int, p: int, budget: int = 1 << 21) -> int:
    """Rows of S per block so a block of Gram rows stays cache-sized."""
    return int(max(8, min(p, budget // max(1, n_img * p))))


def soartc_features(
    patches: np.ndarray,
    sbar: np.ndarray,
    eps: float = EPS,
    *,
    loo_n: int = 0,
    backend: str = "auto",
    gram_dtype: type = np.float64,
) -> np.ndarray:
    """Stage-1 SOARTC features f_i = SOART3(S[i, :] | S̄[i, :]) per patch.

    Parameters
    ----------
    patches : ndarray, shape (n, P, d)
    sbar : ndarray, shape (P, P)
        Mean self-similarity of the unit space.
    eps : float
    loo_n : int
        If non-zero, the reference of each image is S̄ with that image left
        out, ``(loo_n·S̄ − S)/(loo_n − 1)``, where ``loo_n`` is the size of
        the unit space S̄ was computed from (used for thresholds only).
    backend : {"auto", "numba", "numpy"}
    gram_dtype : numpy dtype
        float64 follows the spec; float32 computes the Gram matrix in
        single precision (about 2× faster, tolerance in the docs).

    Returns
    -------
    ndarray, shape (n, P, 3), float64
    """
    q = np.asarray(patches)
    if q.ndim != 3:
        raise ParameterError(f"patches must be (n, P, d), got {q.shape}")
    n, p, _ = q.shape
    sbar = np.ascontiguousarray(sbar, dtype=np.float64)
    if sbar.shape != (p, p):
        raise ParameterError(f"S̄ has shape {sbar.shape}, expected {(p, p)}")
    qg: np.ndarray = np.ascontiguousarray(q, dtype=gram_dtype)
    q64 = q.astype(np.float64, copy=False)
    # Diagonal in float64 always: it divides every column.
    w = 1.0 / (np.einsum("npd,npd->np", q64, q64) + eps)
    xx = np.einsum("ij,ij->i", sbar, sbar)
    out = np.empty((n, p, 3))
    use_numba = backend == "numba" or (backend == "auto" and _kernels.available())
    if backend not in ("auto", "numba", "numpy"):
        raise ParameterError(f"unknown backend {backend!r}")
    qt = np.ascontiguousarray(qg.transpose(0, 2, 1))
    # Process images in small groups and S in row blocks so the Gram block
    # and the matching rows of S̄ stay in cache.
    group = max(1, min(n, (1 << 23) // max(1, p * p * 8)))
    for i0 in range(0, n, group):
        i1 = min(n, i0 + group)
        rows = _block_rows(i1 - i0, p)
        for r0 in range(0, p, rows):
            r1 = min(p, r0 + rows)
            g = np.matmul(qg[i0:i1, r0:r1], qt[i0:i1])
            if use_numba:
                _kernels.soartc_rows(
                    g, w[i0:i1], sbar[r0:r1], xx[r0:r1], eps, loo_n, out[i0:i1, r0:r1]
                )
            else:
                out[i0:i1, r0:r1] = _features_numpy(
                    g.astype(np.float64, copy=False), w[i0:i1], sbar[r0:r1], xx[r0:r1], eps, loo_n
                )
    return out


from . import _kernels  # noqa: E402  (kernels import soart's constants)
