"""Tiled inspection of large frames: any detector, tile by tile, maps stitched.

A line camera gives 5–20 MP frames; resizing one to 256² erases a hairline
crack.  :class:`TiledDetector` cuts every frame into square tiles
(:mod:`gaikan.tiling`: side ``tile``, ``overlap`` pixels shared by
neighbours, every tile inside the frame), fits one inner detector on the
tiles of the good frames, and scores a frame as the **maximum of its tiles'
scores**; the tile maps are stitched into one full-resolution map (the
maximum where tiles overlap).

Threshold rule: each good frame's score is the maximum of its tiles'
*leave-one-out* scores (the inner detector's ``train_scores_``), and the
threshold is their ``threshold_quantile`` quantile — the same rule as for
whole images, on frame scores.  Memory is bounded by ``tile_batch`` tiles
and one frame map, whatever the frame size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .._validation import Check, Interval, check_images, check_is_fitted, validate_params
from ..errors import ModelFileError, ParameterError
from ..tiling import cut_tiles, stitch_max, tile_grid
from .base import MIN_UNIT_SPACE, BaseDetector, Detection

__all__ = ["TiledDetector"]


class TiledDetector(BaseDetector):
    """Any registered detector applied tile by tile to large frames.

    Parameters
    ----------
    detector : str, default "soartc"
        Registry kind of the inner detector.
    detector_params : dict or None
        Its parameters.
    tile : int, default 256
        Tile side in pixels.
    overlap : int, default 32
        Pixels shared by neighbouring tiles (0 ≤ overlap < tile).
    tile_batch : int, default 64
        Tiles scored at once (bounds memory).
    threshold_quantile : float, default 0.99
    threshold : float or None
    map_refine : {"pixel", "none"}, default "pixel"
        Passed to the inner detector (its tile maps are refined there).
    per_position : bool, default True
        One inner detector per tile position, fitted on that position's
        tiles of the good frames: for aligned parts, whose every position
        looks different (the pixel detectors compare position by position).
        False: one inner detector for all tiles, for textures and
        position-free detectors (PatchCore).

    Attributes
    ----------
    inners_ : list of BaseDetector
        The fitted inner detectors: one per tile position, or one for all.
    starts_ : ndarray, shape (t, 2)
        (row, col) of every tile of a frame.
    train_scores_ : ndarray, shape (n,)
        Leave-one-out frame scores of the good frames.
    threshold_, offset_, image_shape_, n_train_
    """

    _param_rules: ClassVar[dict[str, Any]] = {
        "detector": Check(lambda v: isinstance(v, str) and bool(v), "a registry kind"),
        "detector_params": Check(lambda v: v is None or isinstance(v, dict), "a dict or None"),
        "tile": Interval("int", 8, None),
        "overlap": Interval("int", 0, None),
        "tile_batch": Interval("int", 1, None),
        "per_position": Check(lambda v: isinstance(v, bool), "True or False"),
    }

    def __init__(
        self,
        detector: str = "soartc",
        detector_params: dict[str, Any] | None = None,
        tile: int = 256,
        overlap: int = 32,
        tile_batch: int = 64,
        threshold_quantile: float = 0.99,
        threshold: float | None = None,
        map_refine: str = "pixel",
        per_position: bool = True,
    ) -> None:
        self.detector = detector
        self.detector_params = detector_params
        self.tile = tile
        self.overlap = overlap
        self.tile_batch = tile_batch
        self.threshold_quantile = threshold_quantile
        self.threshold = threshold
        self.map_refine = map_refine
        self.per_position = per_position

    # -- fitting ------------------------------------------------------------
    def _make_inner(self) -> Any:
        from .registry import create

        inner = create(self.detector, **(self.detector_params or {}))
        if "map_refine" in inner.get_params():
            inner.set_params(map_refine=self.map_refine)
        return inner

    def fit(self, X: Any, y: Any = None) -> TiledDetector:
        """Fit the inner detector(s) on the tiles of the good frames (n, H, W), n ≥ 5."""
        from .registry import model_family

        validate_params(self)
        if self.overlap >= self.tile:
            raise ParameterError(f"overlap must be below tile ({self.tile}), got {self.overlap}")
        if model_family(self.detector) != "detector" or self.detector == "tiled":
            raise ParameterError(
                f"detector must be an anomaly detector kind, got {self.detector!r}"
            )
        X = check_images(X)
        if X.shape[0] < MIN_UNIT_SPACE:  # the threshold is a quantile of frame scores
            raise ParameterError(
                f"a unit space needs at least {MIN_UNIT_SPACE} good frames, got {X.shape[0]}"
            )
        starts = tile_grid(X.shape[1:], self.tile, self.overlap)
        n, t = X.shape[0], len(starts)
        if self.per_position:  # aligned parts: position j's tiles of every frame
            inners: list[Any] = []
            loo = np.empty((n, t))
            for j in range(t):
                tiles = np.stack([cut_tiles(f, starts[j : j + 1], self.tile)[0] for f in X])
                inner = self._make_inner()
                if inners:
                    _share_backbone(inners[0], [inner])
                inners.append(inner.fit(tiles))
                loo[:, j] = _per_image(inners[-1].train_scores_, n)
        else:  # textures: one unit space of every tile
            tiles = np.concatenate([cut_tiles(f, starts, self.tile) for f in X])
            inners = [self._make_inner().fit(tiles)]
            loo = _per_image(inners[0].train_scores_, n * t).reshape(n, t)
        self.inners_, self.starts_ = inners, starts
        self.image_shape_ = (int(X.shape[1]), int(X.shape[2]))
        self.n_train_ = n
        self.train_scores_ = loo.max(axis=1)  # frame score = max over its tiles
        q = float(np.quantile(self.train_scores_, self.threshold_quantile))
        self.set_threshold(float(self.threshold) if self.threshold is not None else q)
        return self

    # -- scoring ------------------------------------------------------------
    def _check_frames(self, X: Any) -> np.ndarray:
        check_is_fitted(self, ("inners_", "threshold_"))
        X = check_images(X)
        if tuple(X.shape[1:]) != tuple(self.image_shape_):
            h, w = self.image_shape_
            raise ParameterError(
                f"frames are {X.shape[1]}x{X.shape[2]} but the model was fitted on {h}x{w}"
            )
        return X

    def _tiles(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tile scores (n, t) and stitched maps (n, H, W) of a stack of frames."""
        n, t = len(X), len(self.starts_)
        # a loaded model's inners share the backbone from the first call on (then a no-op)
        _share_backbone(self.inners_[0], self.inners_[1:])
        scores = np.empty((n, t))
        maps = np.full(X.shape, -np.inf)
        step = max(1, int(self.tile_batch) // max(1, n))  # tiles per inner call ≈ tile_batch
        for j0 in range(0, t, step):
            js = np.arange(j0, min(t, j0 + step))
            tiles = np.stack([cut_tiles(f, self.starts_[js], self.tile) for f in X])  # (n, b, ..)
            for k, j in enumerate(js):
                inner = self.inners_[j] if self.per_position else self.inners_[0]
                det = inner.detect(tiles[:, k])
                scores[:, j] = det.scores
                for i in range(n):
                    stitch_max(det.maps[i : i + 1], self.starts_[j : j + 1], X.shape[1:], maps[i])
        return scores, maps

    def detect(self, X: Any, progress: Callable[[int], None] | None = None) -> Detection:
        """Frame scores (max over tiles), stitched full-resolution maps, the threshold."""
        X = self._check_frames(X)
        scores, maps = self._tiles(X)
        if progress is not None:
            progress(len(X))
        return Detection(scores=scores.max(axis=1), maps=maps, threshold=self.threshold_)

    def patch_scores(self, X: Any) -> np.ndarray:
        """Tile scores on the tile grid, shape (n, rows, cols)."""
        X = self._check_frames(X)
        return self._tiles(X)[0].reshape(len(X), *self.grid_shape_)

    @property
    def grid_shape_(self) -> tuple[int, int]:
        """(rows, cols) of the tile grid."""
        check_is_fitted(self, ("starts_",))
        rows = len(np.unique(self.starts_[:, 0]))
        return rows, len(self.starts_) // rows

    def anomaly_map(self, X: Any) -> np.ndarray:
        """Stitched maps at frame resolution, shape (n, H, W)."""
        return self.detect(X).maps

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Frame scores (maximum tile score), shape (n,)."""
        return self.detect(X).scores

    # -- model files ----------------------------------------------------------
    def to_modelfile(self) -> Any:
        from ..modelfile import ModelFile, pack_members

        check_is_fitted(self, ("inners_", "threshold_"))
        members, arrays, blobs = pack_members([m.to_modelfile() for m in self.inners_])
        arrays.update(train_scores=self.train_scores_, starts=self.starts_)
        return ModelFile(
            kind=self.kind,
            params=self.get_params(),
            meta={**self._base_meta(), "members": members},
            arrays=arrays,
            blobs=blobs,
        )

    @classmethod
    def from_modelfile(cls, mf: Any) -> TiledDetector:
        from ..modelfile import unpack_members
        from .registry import get_detector_class

        try:
            det = cls(**mf.params)
            subs = unpack_members(mf.meta["members"], mf.arrays, mf.blobs)
            classes: list[Any] = [get_detector_class(sub.kind) for sub in subs]
            det.inners_ = [c.from_modelfile(sub) for c, sub in zip(classes, subs)]
            det.starts_ = np.asarray(mf.arrays["starts"], dtype=np.intp)
            det.train_scores_ = np.asarray(mf.arrays["train_scores"])
            h, w = (int(v) for v in mf.meta["image_shape"])
            det.image_shape_, det.n_train_ = (h, w), int(mf.meta["n_train"])
            if not np.array_equal(det.starts_, tile_grid((h, w), det.tile, det.overlap)):
                raise ParameterError("tile grid does not match the frame shape and tile")
            if len(det.inners_) != (len(det.starts_) if det.per_position else 1):
                raise ParameterError("the number of inner detectors does not match the tiles")
            det.set_threshold(float(mf.meta["threshold"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"model file content does not fit {cls.__name__}: {exc}") from None
        return det


def _share_backbone(first: Any, others: list[Any]) -> None:
    """Give deep inner detectors the first one's feature extractor.

    Every tile position has its own detector but the same backbone, layers
    and tile size: one extractor (network and ONNX session) serves them all,
    instead of one per position held in memory.
    """
    if not hasattr(first, "_extractor"):
        return  # a pixel detector: nothing to share
    fe = first._extractor()
    for det in others:
        if det.__dict__.get("_fe") is not fe:
            det._fe = fe


def _per_image(loo: np.ndarray, n: int) -> np.ndarray:
    """Leave-one-out scores of all ``n`` training images, or an error naming the detector.

    Inner detectors that score only a subset of their unit space leave-one-out
    (PatchCore with a coreset) cannot give every frame its score.
    """
    loo = np.asarray(loo, dtype=np.float64)
    if loo.size != n:
        raise ParameterError(
            "this inner detector scores only part of its unit space leave-one-out; "
            "tile it with a threshold= or another detector"
        )
    return loo
