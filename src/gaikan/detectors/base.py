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
from .._validation import Interval, OneOf, check_images, check_is_fitted, validate_params
from ..errors import ParameterError
from ..patches import fold, grid_shape
from .registry import kind_of_class_path

__all__ = [
    "MAP_REFINE",
    "MIN_UNIT_SPACE",
    "BaseDetector",
    "ClosedFormDetector",
    "Detection",
    "GridDetector",
    "check_images",
]

#: Fewest good images a unit space may have (SOART.md §5).
MIN_UNIT_SPACE = 5

#: Choices of the ``map_refine`` parameter.
MAP_REFINE = ("pixel", "none")

#: Noise floor (grey levels) added to the unit space's pixel spread in the
#: pixel evidence of ``map_refine="pixel"``.
PIXEL_FLOOR = 8.0
#: Blur of the pixel evidence, as a fraction of the image side (2 px at 100²).
PIXEL_BLUR = 0.02


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

    Subclasses store their parameters in ``__init__`` (every detector has
    ``threshold_quantile``, ``threshold`` and ``map_refine``), declare the
    rules ``fit`` checks them against in ``_param_rules`` (see
    :func:`gaikan._validation.validate_params`), and implement
    ``_fit(X) -> loo_grid``, ``_patch_scores(X)``, ``_to_map(grid)``,
    ``grid_shape_`` and ``_get_state()`` / ``_set_state(arrays, meta)``.

    Maps
    ----
    ``anomaly_map`` is the detector's own map at image resolution
    (``_to_map`` of the D² grid).  With ``map_refine="pixel"`` it is the
    square root of that map (a Mahalanobis distance D rather than D²)
    times the *pixel evidence* of each pixel::

        map = √(map of D²) · z,    z = G_σ * ( |T − μ| / (s + 8) )

    μ and s being the unit space's pixel mean and standard deviation
    (``pixel_mean_``, ``pixel_std_``, ddof = 1), 8 grey levels a noise
    floor, and ``G_σ`` a Gaussian blur of σ = 2 % of the image side (2 px
    at 100×100).  The grid says *which window* is abnormal (its cells are
    5–16 pixels wide); the evidence says which of its pixels differ from
    the good parts, so the map's hottest pixel lands on the defect rather
    than on a window's corner; the product of two distances keeps both in
    the same units.  Image scores (the maximum of the grid) are the same in
    both modes; ``map_refine="none"`` is the plain map.  Measured with
    ``benchmarks/bench_pointing.py`` (docs/benchmarks.md, "Pointing").
    """

    #: Registry name, written into model files; set from the registry for
    #: every registered class (:mod:`gaikan.detectors.registry`).
    kind: ClassVar[str] = ""
    #: Images scored per chunk (bounds memory).
    _chunk: ClassVar[int] = 32
    #: Precision images are validated into (deep detectors use float32).
    _input_dtype: ClassVar[type] = np.float64

    #: Parameters every detector has (set by the subclass's ``__init__``).
    threshold_quantile: float
    threshold: float | None
    map_refine: str

    _param_rules: ClassVar[dict[str, Any]] = {
        "threshold_quantile": Interval("real", 0.0, 1.0, closed="right"),
        "threshold": Interval("real", 0.0, None, none_ok=True),
        "map_refine": OneOf(MAP_REFINE),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = kind_of_class_path(f"{cls.__module__}:{cls.__qualname__}")
        if kind:
            cls.kind = kind
        elif "kind" not in cls.__dict__:
            cls.kind = ""  # not registered (a base or a user's subclass)

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

        Raises
        ------
        gaikan.errors.ParameterError
            A parameter breaks its rule (the message names it), or X is
            not a usable batch of at least 5 images.
        """
        validate_params(self)
        self._drop_caches()
        X = check_images(X, dtype=self._input_dtype)
        if X.shape[0] < MIN_UNIT_SPACE:
            raise ParameterError(
                f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {X.shape[0]}"
            )
        self.image_shape_ = (int(X.shape[1]), int(X.shape[2]))
        self.n_train_ = int(X.shape[0])
        self.pixel_mean_ = X.mean(axis=0, dtype=np.float64)
        self.pixel_std_ = X.std(axis=0, ddof=1, dtype=np.float64)
        # _fit may return leave-one-out grids for a subset of the images only
        # (PatchCore), so train_scores_ has that subset's length.
        loo_grid = np.asarray(self._fit(X))
        self.train_scores_ = loo_grid.reshape(loo_grid.shape[0], -1).max(axis=1)
        if self.threshold is not None:
            self.set_threshold(float(self.threshold))
        else:
            self.set_threshold(float(np.quantile(self.train_scores_, self.threshold_quantile)))
        return self

    def set_threshold(self, threshold: float) -> BaseDetector:
        """Set the image-score threshold above which a part is a defect."""
        if not np.isfinite(threshold):
            raise ParameterError(f"threshold must be finite, got {threshold!r}")
        self.threshold_ = float(threshold)
        self.offset_ = -self.threshold_
        return self

    def _check_fitted(self) -> None:
        check_is_fitted(self, ("threshold_", "image_shape_"))

    def _check_input(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X = check_images(X, dtype=self._input_dtype)
        if tuple(X.shape[1:]) != tuple(self.image_shape_):
            h, w = self.image_shape_
            raise ParameterError(
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

    def _to_map(self, grid: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Grid (n, nh, nw) → map (n, H, W) at image resolution."""
        raise NotImplementedError

    def pixel_evidence(self, X: Any) -> np.ndarray:
        """How much each pixel differs from the good parts, shape (n, H, W).

        ``G_σ * (|X − pixel_mean_| / (pixel_std_ + 8))`` with σ = 2 % of
        the image side: the factor ``map_refine="pixel"`` multiplies the
        map's square root by.
        """
        X = self._check_input(X)
        return self._evidence(X)

    def _evidence(self, X: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        z = np.abs(X - self.pixel_mean_) / (self.pixel_std_ + PIXEL_FLOOR)
        sigma = PIXEL_BLUR * min(X.shape[1:])
        return gaussian_filter(z, (0, sigma, sigma), mode="nearest")

    def _maps(self, grid: np.ndarray, X: np.ndarray) -> np.ndarray:
        maps = self._to_map(grid)
        if self.map_refine == "pixel" and hasattr(self, "pixel_mean_"):
            maps = np.sqrt(np.maximum(maps, 0.0)) * self._evidence(X)
        return maps

    def anomaly_map(self, X: Any) -> np.ndarray:
        """Anomaly map at image resolution, higher = worse, shape (n, H, W)."""
        X = self._check_input(X)
        return self._maps(self._chunked(X), X)

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
        return Detection(scores=scores, maps=self._maps(grid, X), threshold=self.threshold_)

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
        if not self.kind:
            raise ParameterError(
                f"{type(self).__name__} is not a registered kind; add it to "
                "gaikan.detectors.registry.KINDS to save it"
            )
        arrays, meta = self._get_state()
        arrays = dict(arrays)
        arrays["train_scores"] = self.train_scores_
        if hasattr(self, "pixel_mean_"):  # absent in models loaded from older files
            arrays["pixel_mean"] = self.pixel_mean_
            arrays["pixel_std"] = self.pixel_std_
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
        """Rebuild a fitted detector from a :class:`ModelFile`.

        Files written before ``map_refine`` existed hold no pixel
        statistics; they load with ``map_refine="none"`` (their maps as
        they were).
        """
        from ..errors import ModelFileError

        try:
            arrays = dict(mf.arrays)
            params = dict(mf.params)
            if "pixel_mean" not in arrays and "map_refine" in cls._param_names():
                params["map_refine"] = "none"
            params = cls._params_of_older_files(params)
            det = cls(**params)
            det.train_scores_ = arrays.pop("train_scores")
            h, w = (int(v) for v in mf.meta["image_shape"])
            det.image_shape_ = (h, w)
            det.n_train_ = int(mf.meta["n_train"])
            if "pixel_mean" in arrays:
                det.pixel_mean_ = np.asarray(arrays.pop("pixel_mean"), dtype=np.float64)
                det.pixel_std_ = np.asarray(arrays.pop("pixel_std"), dtype=np.float64)
                if (
                    det.image_shape_ != det.pixel_mean_.shape
                    or det.image_shape_ != det.pixel_std_.shape
                ):
                    raise ParameterError("pixel statistics do not match the image shape")
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

    @classmethod
    def _params_of_older_files(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters a file written before a parameter existed must load with.

        A new parameter's default may change results; a file that does not
        name it was fitted and checked without it, so it keeps the old
        behaviour.  Subclasses fill such parameters in (e.g. PatchCore's
        ``search_dim=0``).
        """
        return params

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
    def grid_shape_(self) -> tuple[int, int]:  # pragma: no cover - abstract
        """Grid (nh, nw) of patch scores for the fitted image shape."""
        raise NotImplementedError


class GridDetector(BaseDetector):
    """A detector on the k×k, stride-s window grid of SOART.md §1.

    Declares the ``kernel`` and ``stride`` parameters the grid needs, their
    rules, the grid shape and the spec's map (each pixel: the mean D² of
    the windows covering it).
    """

    kernel: int
    stride: int

    _param_rules: ClassVar[dict[str, Any]] = {
        "kernel": Interval("int", 1, None),
        "stride": Interval("int", 1, None),
    }

    def _to_map(self, grid: np.ndarray) -> np.ndarray:
        """Grid (n, nh, nw) → map (n, H, W): mean of covering windows."""
        return fold(grid, self.image_shape_, self.kernel, self.stride)

    @property
    def grid_shape_(self) -> tuple[int, int]:
        """Window grid (nh, nw) of the fitted image shape."""
        return grid_shape(self.image_shape_, self.kernel, self.stride)


class ClosedFormDetector(GridDetector):
    """A grid detector whose fit is a closed form of per-image statistics.

    Its unit space is built in three steps, each a sum over images, so any
    partition of the good images into batches gives the same model once the
    batches' statistics are merged (:class:`gaikan.taguchi.moments.Moments`,
    exact pairwise merges): the distributed fit
    (:func:`gaikan.distributed.fit.fit_files_dask`) runs the per-batch
    halves on a cluster's workers and reduces them in a tree.

    1. :meth:`_reference_moments` (per batch) → merged →
       :meth:`_set_reference`: the stage-1 reference (SOARTC's mean
       self-similarity S̄, the unit-space mean patches), plus the pixel
       mean and spread (:meth:`_pixel_moments` → :meth:`_set_pixels`);
    2. :meth:`_fit_features` (per batch): each image's stage-1 features and
       its features against the reference without it, whose
       :meth:`_stage2_moments` merge into the MT Gaussians
       (:meth:`_set_stage2`);
    3. :meth:`_loo_grid` (per batch): the leave-one-out D² grids, whose
       maxima are the training scores the threshold is taken from.

    ``fit`` itself does all three on all images in one process.
    """

    mean_: np.ndarray
    whiten_: np.ndarray

    def _check_grid(self, image_shape: tuple[int, int]) -> None:
        """Raise ParameterError when the images do not fit the window grid."""
        grid_shape(image_shape, self.kernel, self.stride)

    @staticmethod
    def _pixel_moments(X: np.ndarray):
        """Pixel mean and element-wise scatter of a batch (n, H, W)."""
        from ..taguchi.moments import Moments

        return Moments.of(X, "diag")

    def _set_pixels(self, moments) -> None:
        """``pixel_mean_``, ``pixel_std_`` (ddof = 1) from merged pixel statistics."""
        self.pixel_mean_ = np.asarray(moments.mean, dtype=np.float64)
        self.pixel_std_ = np.sqrt(moments.scatter / (moments.n - 1))

    def _reference_moments(self, X: np.ndarray):  # pragma: no cover - abstract
        """Statistics (mean only) of the per-image stage-1 reference quantity."""
        raise NotImplementedError

    def _set_reference(self, moments) -> None:  # pragma: no cover - abstract
        """Set the stage-1 reference from the merged reference statistics."""
        raise NotImplementedError

    def _fit_features(
        self, X: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """(features, leave-one-out features) of a batch, each (b, P, m)."""
        raise NotImplementedError

    @staticmethod
    def _stage2_moments(features: np.ndarray):
        """Statistics (mean, scatter per position) of a batch's features (b, P, m)."""
        from ..taguchi.moments import Moments

        return Moments.of(features, "outer")

    def _set_stage2(self, moments) -> None:
        """``mean_``, ``whiten_`` from the merged feature statistics."""
        from ..taguchi.mt import gaussians_from_moments

        self.mean_, self.whiten_ = gaussians_from_moments(moments)

    def _loo_grid(self, features: np.ndarray, loo_features: np.ndarray, moments) -> np.ndarray:
        """Leave-one-out D² grids (b, nh, nw) of a batch, given the merged statistics."""
        from ..taguchi.mt import loo_mahalanobis_from

        assert moments.scatter is not None
        loo = loo_mahalanobis_from(features, loo_features, moments.mean, moments.scatter, moments.n)
        return loo.reshape(features.shape[0], *self.grid_shape_)
