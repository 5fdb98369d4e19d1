"""Mergeable sufficient statistics: count, mean and centred scatter.

Every closed-form fit of the Taguchi family (unit-space means, SOARTC's
mean self-similarity, the MT Gaussians per position, the pixel mean and
spread) is a function of these.  Statistics of two disjoint sets of samples
merge exactly in closed form (Chan, Golub & LeVeque 1979)::

    n = nₐ + n_b,   δ = μ_b − μₐ,   μ = μₐ + δ·n_b/n,
    M = Mₐ + M_b + δ δᵀ · nₐ n_b / n

so batches computed anywhere (one process, or the workers of a cluster)
reduce pairwise in a tree to the statistics of the whole set, without
gathering the samples.  Centred scatter (not raw sums of squares) keeps the
result as accurate as a two-pass computation on all samples at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ParameterError

__all__ = ["Moments", "merge_all"]

Scatter = Literal["none", "diag", "outer"]


@dataclass
class Moments:
    """Statistics of ``n`` samples, per position.

    Attributes
    ----------
    n : int
        Number of samples.
    mean : ndarray, shape (..., m)
        Mean sample (float64).
    scatter : ndarray or None
        ``"outer"``: shape (..., m, m), ``Σ (x − μ)(x − μ)ᵀ``;
        ``"diag"``: shape (..., m), ``Σ (x − μ)²`` element-wise;
        ``"none"``: None (only the mean is wanted).
    kind : {"none", "diag", "outer"}
    """

    n: int
    mean: np.ndarray
    scatter: np.ndarray | None
    kind: Scatter = "outer"

    @classmethod
    def of(cls, x: np.ndarray, kind: Scatter = "outer") -> Moments:
        """Statistics of the samples along the first axis of ``x``.

        Parameters
        ----------
        x : ndarray, shape (n, ..., m)
        kind : {"none", "diag", "outer"}
        """
        a = np.asarray(x, dtype=np.float64)
        if a.ndim < 2 or a.shape[0] < 1:
            raise ParameterError(f"need at least one sample of shape (..., m), got {a.shape}")
        mean = a.mean(axis=0)
        if kind == "none":
            return cls(int(a.shape[0]), mean, None, kind)
        dev = a - mean
        if kind == "diag":
            return cls(int(a.shape[0]), mean, np.einsum("n...,n...->...", dev, dev), kind)
        if kind == "outer":
            return cls(int(a.shape[0]), mean, np.einsum("n...i,n...j->...ij", dev, dev), kind)
        raise ParameterError(f"kind must be 'none', 'diag' or 'outer', got {kind!r}")

    @classmethod
    def of_sum(cls, total: np.ndarray, n: int) -> Moments:
        """Mean-only statistics from the sum of ``n`` samples."""
        return cls(int(n), np.asarray(total, dtype=np.float64) / n, None, "none")

    def merge(self, other: Moments) -> Moments:
        """Statistics of the union of two disjoint sets of samples."""
        if self.kind != other.kind or self.mean.shape != other.mean.shape:
            raise ParameterError(
                f"cannot merge {self.kind} statistics of shape {self.mean.shape} with "
                f"{other.kind} ones of shape {other.mean.shape}"
            )
        na, nb = self.n, other.n
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * (nb / n)
        if self.kind == "none" or self.scatter is None or other.scatter is None:
            return Moments(n, mean, None, self.kind)
        w = na * nb / n
        if self.kind == "diag":
            extra = delta * delta * w
        else:
            extra = np.einsum("...i,...j->...ij", delta, delta) * w
        return Moments(n, mean, self.scatter + other.scatter + extra, self.kind)

    def covariance(self) -> np.ndarray:
        """Sample covariance (ddof = 1): ``scatter / (n − 1)``."""
        if self.scatter is None:
            raise ParameterError("these statistics hold no scatter")
        if self.n < 2:
            raise ParameterError("a covariance needs at least 2 samples")
        return self.scatter / (self.n - 1)


def merge_all(parts: list[Moments]) -> Moments:
    """Merge statistics pairwise, as a balanced tree (the order a cluster reduces in)."""
    if not parts:
        raise ParameterError("no statistics to merge")
    level = list(parts)
    while len(level) > 1:
        nxt = [level[i].merge(level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
