"""The detector contract shared by every gaikan detector.

Detectors follow scikit-learn's outlier-detector contract
(``sklearn.covariance.EllipticEnvelope`` is the closest relative):

- ``__init__`` stores keyword parameters untouched;
- ``fit(X)`` validates and sets trailing-underscore attributes;
- ``score_samples(X)``: higher = more normal (``== -anomaly_score(X)``);
- ``decision_function(X) = score_samples(X) - offset_``: negative = defect;
- ``predict(X)``: −1 for a defect, +1 for a good part.

and adds image methods with an unambiguous direction (higher = worse):
``patch_scores(X)`` (n, nh, nw), ``anomaly_map(X)`` (n, H, W),
``anomaly_score(X)`` (n,), plus :meth:`BaseDetector.detect` which returns
scores, maps and verdicts from one pass.

Threshold rule (``offset_ = -threshold_``)
------------------------------------------
Unless ``threshold`` is given, the threshold is the ``threshold_quantile``
quantile (default 0.99, linear interpolation) of the unit space's
*leave-one-out* image scores: each good training image scored by a model
fitted without it.  Leave-one-out scores behave like scores of new good
parts, so a fresh model flags about 1 % of good parts; in-sample scores
would be optimistic and flag far more.  ``set_threshold`` overrides it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._params import ParamsMixin
from ..errors import NotFittedError
from ..patches import fold, grid_shape

__all__ = ["MIN_UNIT_SPACE", "BaseDetector", "Detection", "check_images"]

#: Fewest good images a unit space may have (SOART.md §5).
MIN_UNIT_SPACE = 5


def check_images(X: Any, name: str = "X", dtype: type = np.float64) -> np.ndarray:
    """Validate a batch of grey images and return it as ``dtype`` (n, H, W).

    Raises
    ------
    ValueError
        Empty input, wrong number of dimensions, images of different
        shapes, or non-finite values.
    """
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(f"{name} is empty: no images given")
        shapes = {np.shape(x) for x in X}
        if len(shapes) > 1:
            raise ValueError(
                f"{name} holds images of different shapes {sorted(shapes)}; "
                "resize them to one size first (gaikan.io.load_images(..., size=...))"
            )
    arr = np.asarray(X)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array of images")
    if arr.ndim != 3:
        hint = " (for one image pass X[None])" if arr.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (n, H, W), got {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclass
class Detection:
    """Scores, maps and verdicts of a batch, computed in one pass.

    Attributes
    ----------
    scores : ndarray, shape (n,)
        Image anomaly scores (higher = worse).
    maps : ndarray, shape (n, H, W)
        Anomaly maps at image resolution.
    threshold : float
    is_defect : ndarray of bool, shape (n,)
    """

    scores: np.ndarray
    maps: np.ndarray
    threshold: float

    @property
    def is_defect(self) -> np.ndarray:
        return self.scores > self.threshold


class BaseDetector(ParamsMixin):
    """Base class: validation, thresholds, the contract methods, model files.

    Subclasses implement ``_fit(X) -> loo_grid``, ``_patch_scores(X)``,
    ``_get_state()`` / ``_set_state(arrays, meta)`` and, if their grid is
    not a plain kernel/stride grid, ``_to_map(grid)``.
    """

    #: Registry name, written into model files.
    kind: ClassVar[str] = ""
    #: Images scored per chunk (bounds memory).
    _chunk: ClassVar[int] = 32
    #: Precision images are validated into (deep detectors use float32).
    _input_dtype: ClassVar[type] = np.float64

    # -- fitting ----------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> BaseDetector:
        """Fit the unit space on good images.

        Parameters
        ----------
        X : array-like, shape (n, H, W)
            Good images on the 0–255 grey scale, n ≥ 5.
        y : ignored

        Returns
        -------
        self
        """
        X = check_images(X, dtype=self._input_dtype)
        if X.shape[0] < MIN_UNIT_SPACE:
            raise ValueError(
                f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {X.shape[0]}"
            )
        q = getattr(self, "threshold_quantile", 0.99)
        if not 0.0 < float(q) <= 1.0:
            raise ValueError(f"threshold_quantile must be in (0, 1], got {q}")
        self.image_shape_ = (int(X.shape[1]), int(X.shape[2]))
        self.n_train_ = int(X.shape[0])
        # _fit may return leave-one-out grids for a subset of the images only
        # (PatchCore), so train_scores_ has that subset's length.
        loo_grid = np.asarray(self._fit(X))
        self.train_scores_ = loo_grid.reshape(loo_grid.shape[0], -1).max(axis=1)
        fixed = getattr(self, "threshold", None)
        if fixed is not None:
            self.set_threshold(float(fixed))
        else:
            self.set_threshold(float(np.quantile(self.train_scores_, q)))
        return self

    def set_threshold(self, threshold: float) -> BaseDetector:
        """Set the image-score threshold above which a part is a defect."""
        if not np.isfinite(threshold):
            raise ValueError("threshold must be finite")
        self.threshold_ = float(threshold)
        self.offset_ = -self.threshold_
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _check_input(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = check_images(X, dtype=self._input_dtype)
        if tuple(X.shape[1:]) != tuple(self.image_shape_):
            h, w = self.image_shape_
            raise ValueError(
                f"images are {X.shape[1]}x{X.shape[2]} (HxW) but the model was fitted on "
                f"{h}x{w}; load them with size=({h}, {w})"
            )
        return X

    # -- scoring ----------------------------------------------------------
    def patch_scores(self, X: Any) -> np.ndarray:
        """Per-patch abnormality D² on the window grid.

        Parameters
        ----------
        X : array-like, shape (n, H, W)

        Returns
        -------
        ndarray, shape (n, nh, nw)
        """
        X = self._check_input(X)
        return self._chunked(X)

    def _chunked(self, X: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        parts = []
        for i in range(0, X.shape[0], self._chunk):
            parts.append(self._patch_scores(X[i : i + self._chunk]))
            if progress is not None:
                progress(parts[-1].shape[0])
        return np.concatenate(parts)

    def _to_map(self, grid: np.ndarray) -> np.ndarray:
        """Grid (n, nh, nw) → map (n, H, W): mean of covering windows."""
        return fold(grid, self.image_shape_, self.kernel, self.stride)

    def anomaly_map(self, X: Any) -> np.ndarray:
        """Anomaly map at image resolution, higher = worse, shape (n, H, W)."""
        return self._to_map(self.patch_scores(X))

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Image anomaly score (maximum patch D²), higher = worse, shape (n,)."""
        g = self.patch_scores(X)
        return g.reshape(g.shape[0], -1).max(axis=1)

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality score, higher = more normal: ``-anomaly_score(X)``."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for defects."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """−1 for a defect, +1 for a good part."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def detect(self, X: Any, progress: Callable[[int], None] | None = None) -> Detection:
        """Scores, maps and verdicts from one pass over X.

        Parameters
        ----------
        X : array-like, shape (n, H, W)
        progress : callable, optional
            Called with the number of images finished after each chunk.
        """
        X = self._check_input(X)
        grid = self._chunked(X, progress)
        scores = grid.reshape(grid.shape[0], -1).max(axis=1)
        return Detection(scores=scores, maps=self._to_map(grid), threshold=self.threshold_)

    # -- model files ------------------------------------------------------
    def _base_meta(self) -> dict[str, Any]:
        return {
            "image_shape": list(self.image_shape_),
            "n_train": self.n_train_,
            "threshold": self.threshold_,
        }

    def to_modelfile(self):
        """The detector as a :class:`gaikan.modelfile.ModelFile`."""
        from ..modelfile import ModelFile

        self._check_fitted()
        arrays, meta = self._get_state()
        arrays = dict(arrays)
        arrays["train_scores"] = self.train_scores_
        return ModelFile(
            kind=self.kind,
            params=self.get_params(),
            meta={**self._base_meta(), **meta},
            arrays=arrays,
            blobs=self._get_blobs(),
        )

    def save(self, path) -> None:
        """Save to a single model file (zip of JSON + npz, no pickle)."""
        from ..modelfile import write_model

        write_model(path, self.to_modelfile())

    @classmethod
    def from_modelfile(cls, mf) -> BaseDetector:
        """Rebuild a fitted detector from a :class:`ModelFile`."""
        from ..errors import ModelFileError

        try:
            det = cls(**mf.params)
            arrays = dict(mf.arrays)
            det.train_scores_ = arrays.pop("train_scores")
            det.image_shape_ = tuple(int(v) for v in mf.meta["image_shape"])
            det.n_train_ = int(mf.meta["n_train"])
            det._set_state(arrays, mf.meta)
            det._set_blobs(mf.blobs)
            det.set_threshold(float(mf.meta["threshold"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"model file content does not fit {cls.__name__}: {exc}") from None
        return det

    @classmethod
    def load(cls, path) -> BaseDetector:
        """Load a model file saved by :meth:`save`."""
        from .registry import load

        det = load(path)
        if not isinstance(det, cls):
            from ..errors import ModelFileError

            raise ModelFileError(f"{path}: holds a {type(det).__name__}, not a {cls.__name__}")
        return det

    # -- hooks for subclasses ---------------------------------------------
    def _fit(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def _set_state(
        self, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> None:  # pragma: no cover
        raise NotImplementedError

    def _get_blobs(self) -> dict[str, bytes]:
        return {}

    def _set_blobs(self, blobs: dict[str, bytes]) -> None:
        if blobs:
            from ..errors import ModelFileError

            raise ModelFileError(f"unexpected members {sorted(blobs)} for {type(self).__name__}")

    @property
    def grid_shape_(self) -> tuple[int, int]:
        """Window grid (nh, nw) of the fitted image shape."""
        return grid_shape(self.image_shape_, self.kernel, self.stride)
