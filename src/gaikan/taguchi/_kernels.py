"""Numba twins of the hot loops, loaded lazily.

Importing this module never compiles anything; the first call does (and
caches to disk when the package directory is writable).  If numba is
missing or broken, :func:`available` is False and callers use numpy.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["available", "soartc_rows"]

_compiled = None
_failed = False


def _build():
    import numba

    @numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
    def _rows(g, w, sbar, xx, eps, loo_n, out):  # pragma: no cover - compiled
        n, b, p = g.shape
        s = np.empty(p)
        ref = np.empty(p)
        for t in range(n):
            for i in range(b):
                # pass 1: the row S[i, :], its reference row and β
                xy = 0.0
                if loo_n > 0:
                    xr = 0.0
                    for j in range(p):
                        sj = (g[t, i, j] + eps) * w[t, j]
                        rj = (loo_n * sbar[i, j] - sj) / (loo_n - 1)
                        s[j] = sj
                        ref[j] = rj
                        xy += rj * sj
                        xr += rj * rj
                else:
                    xr = xx[i]
                    for j in range(p):
                        sj = (g[t, i, j] + eps) * w[t, j]
                        s[j] = sj
                        ref[j] = sbar[i, j]
                        xy += sbar[i, j] * sj
                beta = (xy + eps) / (xr + eps)
                # pass 2: Manhattan and Chebyshev norms of the residual
                eta = 0.0
                nu = 0.0
                for j in range(p):
                    r = abs(s[j] - beta * ref[j])
                    eta += r
                    nu = max(nu, r)
                log_eta = math.log(eta + 1.0)
                out[t, i, 0] = math.log(max(beta, 1e-12))
                out[t, i, 1] = log_eta
                out[t, i, 2] = math.log(nu + 1.0) - log_eta

    return _rows


def available() -> bool:
    """True when the numba kernels can be used (``GAIKAN_NO_NUMBA`` unset)."""
    global _compiled, _failed
    if os.environ.get("GAIKAN_NO_NUMBA"):
        return False
    if _compiled is None and not _failed:
        try:
            _compiled = _build()
        except Exception:  # noqa: BLE001 - numba missing or incompatible: numpy path instead
            _failed = True
    return _compiled is not None


def soartc_rows(g, w, sbar, xx, eps, loo_n, out) -> None:
    """Fill ``out[t, i]`` with SOART3(S_t[i, :] | reference row i).

    g : (n, B, P) Gram rows; w : (n, P) 1/(diag+ε); sbar : (B, P);
    xx : (B,) row norms² of sbar; out : (n, B, 3) float64, written in place.
    """
    if not available() or _compiled is None:
        raise RuntimeError("numba kernels are not available")
    _compiled(g, np.ascontiguousarray(w), sbar, xx, float(eps), int(loo_n), out)
