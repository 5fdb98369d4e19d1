"""Several unit spaces for a product that comes in variants.

A line often runs visibly different versions of one good part (ELPV's
mono- and polycrystalline cells, two suppliers' housings).  One unit
space over all of them is broad and hides defects; this named variant
(SOART.md §7) clusters the good images into ``n_variants`` groups by a
coarse picture of each image (k-means on 8×8 block means, seeded) and
fits one detector per group.  A part is scored by the group it resembles
most: its image score is the *minimum* over the groups' scores, and its
map is that group's map.  A good part of any variant is therefore
normal, and a defect must look normal to no group to be missed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .._validation import Check, Interval, OneOf
from .base import MIN_UNIT_SPACE, BaseDetector
from .registry import KINDS, create, get_detector_class

__all__ = ["VariantDetector", "kmeans"]


def _signature(X: np.ndarray, cells: int = 8) -> np.ndarray:
    """Coarse picture of each image, shape (n, 2·cells²).

    Block means and block standard deviations on a ``cells``×``cells``
    grid of the image standardised by its own mean and spread, so groups
    form by layout and texture rather than by overall brightness.
    """
    n, h, w = X.shape
    c = min(cells, h, w)
    hh, ww = (h // c) * c, (w // c) * c
    z = X[:, :hh, :ww]
    z = (z - z.mean(axis=(1, 2), keepdims=True)) / (z.std(axis=(1, 2), keepdims=True) + 1e-9)
    blocks = z.reshape(n, c, hh // c, c, ww // c)
    return np.concatenate(
        [blocks.mean(axis=(2, 4)).reshape(n, -1), blocks.std(axis=(2, 4)).reshape(n, -1)], axis=1
    )


def kmeans(
    F: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 5, n_iter: int = 100
) -> np.ndarray:
    """k-means (k-means++ seeding, Lloyd iterations, best of ``n_init``).

    Parameters
    ----------
    F : ndarray, shape (n, m)
    k : int

    Returns
    -------
    labels : ndarray of int, shape (n,)
    """
    best, best_inertia = None, np.inf
    n = F.shape[0]
    for _ in range(n_init):
        centres = [F[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min([np.sum((F - c) ** 2, axis=1) for c in centres], axis=0)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(F[rng.choice(n, p=p)])
        c = np.array(centres)
        for _ in range(n_iter):
            lab = np.argmin(((F[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            new = np.array([F[lab == j].mean(0) if np.any(lab == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(((F - c[lab]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = lab, inertia
    assert best is not None  # n_init ≥ 1
    return best


class VariantDetector(BaseDetector):
    """One unit space per product variant, found by clustering good images.

    Parameters
    ----------
    detector : str, default "soartc"
        Registry name of the detector fitted per variant.
    n_variants : int, default 2
        Number of groups.  Groups smaller than 5 images are merged into
        their nearest neighbour, so fewer may be fitted (``n_fitted_``).
    detector_params : dict, optional
        Parameters of each per-variant detector.
    random_state : int, default 0
        Seed of the k-means clustering.
    threshold_quantile, threshold : see :class:`BaseDetector`.
    map_refine : {"none", "pixel"}, default "none"
        Pixel evidence of the map (see :class:`BaseDetector`), computed
        against all good images.  The members' own ``map_refine`` is not
        used (their grids are mapped with their ``_to_map``).

    Attributes
    ----------
    members_ : list of BaseDetector
    n_fitted_ : int
    train_labels_ : ndarray of int, shape (n_train,)
    """

    _param_rules: ClassVar[dict[str, Any]] = {
        "detector": OneOf(
            tuple(k.name for k in KINDS.values() if k.family == "detector" and k.name != "variants")
        ),
        "n_variants": Interval("int", 1, None),
        "detector_params": Check(lambda v: v is None or isinstance(v, dict), "a dict or None"),
        "random_state": Interval("int", 0, None),
    }

    def __init__(
        self,
        detector: str = "soartc",
        n_variants: int = 2,
        detector_params: dict[str, Any] | None = None,
        random_state: int = 0,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        map_refine: str = "none",
    ) -> None:
        self.detector = detector
        self.n_variants = n_variants
        self.detector_params = detector_params
        self.random_state = random_state
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold
        self.map_refine = map_refine

    def _cluster(self, X: np.ndarray) -> np.ndarray:
        k = int(self.n_variants)
        if X.shape[0] < k * MIN_UNIT_SPACE:
            k = max(1, X.shape[0] // MIN_UNIT_SPACE)
        f = _signature(X)
        f = (f - f.mean(0)) / (f.std(0) + 1e-9)
        lab = (
            kmeans(f, k, np.random.default_rng(self.random_state))
            if k > 1
            else np.zeros(len(X), int)
        )
        # merge groups too small for a unit space into the nearest group
        while True:
            sizes = np.bincount(lab, minlength=lab.max() + 1)
            small = [j for j in range(sizes.size) if 0 < sizes[j] < MIN_UNIT_SPACE]
            if not small:
                break
            j = small[0]
            cents = np.array(
                [
                    f[lab == i].mean(0) if sizes[i] else np.full(f.shape[1], np.inf)
                    for i in range(sizes.size)
                ]
            )
            d = ((cents - cents[j]) ** 2).sum(1)
            d[j] = np.inf
            lab[lab == j] = int(np.argmin(d))
        _, lab = np.unique(lab, return_inverse=True)
        return lab

    def _fit(self, X: np.ndarray) -> np.ndarray:
        lab = self._cluster(X)
        self.train_labels_ = lab
        self.members_ = []
        for j in range(lab.max() + 1):
            m = create(self.detector, **(self.detector_params or {}))
            self.members_.append(m.fit(X[lab == j]))
        self.n_fitted_ = len(self.members_)
        # leave-one-out image scores: own group without the image, other
        # groups as they are (they never saw it); the minimum counts.
        loo = np.empty(X.shape[0])
        for j, m in enumerate(self.members_):
            loo[lab == j] = m.train_scores_
        for j, m in enumerate(self.members_):
            other = lab != j
            if other.any():
                loo[other] = np.minimum(loo[other], m.anomaly_score(X[other]))
        return loo[:, None]

    def _grids(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # X is validated once by the caller; members score it directly
        grids = np.stack([m._chunked(X) for m in self.members_])  # (g, n, nh, nw)
        scores = grids.reshape(grids.shape[0], grids.shape[1], -1).max(-1)
        best = np.argmin(scores, axis=0)
        return grids[best, np.arange(X.shape[0])], best

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        return self._grids(X)[0]

    def variant(self, X: Any) -> np.ndarray:
        """Index of the group each image is scored against, shape (n,)."""
        return self._grids(self._check_input(X))[1]

    def _to_map(self, grid: np.ndarray) -> np.ndarray:
        return self.members_[0]._to_map(grid)

    @property
    def grid_shape_(self) -> tuple[int, int]:
        return self.members_[0].grid_shape_

    def _get_state(self):
        from ..modelfile import pack_members

        members, arrays, _ = pack_members([m.to_modelfile() for m in self.members_])
        arrays["train_labels"] = self.train_labels_
        return arrays, {"members": members}

    def _set_state(self, arrays, meta):
        from ..modelfile import unpack_members

        self.train_labels_ = arrays["train_labels"]
        self.members_ = [
            get_detector_class(sub.kind).from_modelfile(sub)
            for sub in unpack_members(meta["members"], arrays, {})
        ]
        self.n_fitted_ = len(self.members_)
