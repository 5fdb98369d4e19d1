"""Where the verdict is decided: any fitted model → one :class:`Inspection` per image.

Scores (higher = worse), one meaning per model family
----------------------------------------------------
detector
    The detector's image score (``anomaly_score``: the largest patch
    anomaly), against the model's threshold (``threshold_``: by default the
    0.99 quantile of the unit space's leave-one-out scores).
classifier
    ``1 − P(good)``, the probability that the part is *not* good, against a
    threshold of 0.5 by default.  A part passes only when the classifier is
    at least as sure it is good as not; with two classes that is the same
    as "the predicted class is the good class".  A classifier without a good
    class (every class a defect type) scores 1 for every part.  The class
    and its probability are reported beside the score.

Verdict
    ``"defect"`` exactly when ``score > threshold``, ``"ok"`` otherwise, and
    ``"error"`` when the image could not be read or the model gave no finite
    score (a blank or saturated frame) — never blank.

Display map
    The model's localisation map (detector: ``anomaly_map``; classifier:
    ``explain`` of the predicted class), calibrated by
    :func:`gaikan.inspection.display.calibrate` so that its maximum is the
    score.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..detectors.registry import model_family
from ..errors import ParameterError
from .display import calibrate, peak
from .result import Inspection

__all__ = ["CLASSIFIER_THRESHOLD", "Inspector", "model_family", "to_original"]

#: Default threshold on a classifier's score ``1 − P(good)``.
CLASSIFIER_THRESHOLD = 0.5


def to_original(
    row: int, col: int, shape: tuple[int, int], original: tuple[int, int]
) -> tuple[int, int]:
    """Map a pixel of a resized image back to the original image's pixel grid.

    Pixel centres are matched: ``r0 = (r + 0.5) · H0 / H − 0.5``, rounded.
    """
    h, w = shape
    h0, w0 = original
    r0 = round((row + 0.5) * h0 / h - 0.5)
    c0 = round((col + 0.5) * w0 / w - 0.5)
    return int(min(max(r0, 0), h0 - 1)), int(min(max(c0, 0), w0 - 1))


class Inspector:
    """A fitted model, ready to inspect images.

    Parameters
    ----------
    model : fitted detector or classifier
        Any model :func:`gaikan.load` returns (every registry kind).
    threshold : float, optional
        Overrides the model's threshold (detectors: ``threshold_``;
        classifiers: :data:`CLASSIFIER_THRESHOLD`).  Finite and ≥ 0.

    Attributes
    ----------
    family : {"detector", "classifier"}
    kind : str
        The model's registry name (``soartc``, ``padim``, ``classifier`` …).
    image_shape : (int, int)
        (H, W) images are loaded at for this model.
    resize : {"stretch", "pad"}
        How images are brought to ``image_shape`` (:mod:`gaikan.geometry`;
        the model file's choice, ``stretch`` for classifiers and old files).
    threshold : float
    classes : list of str or None
    good_class : str or None
    """

    def __init__(self, model: Any, threshold: float | None = None) -> None:
        self.model = model
        self.family = model_family(model)
        self.kind = str(getattr(type(model), "kind", "") or type(model).__name__.lower())
        self.classes: list[str] | None = None
        self.good_class: str | None = None
        self._good_idx: int | None = None
        self.resize = "stretch"
        if self.family == "classifier":
            if getattr(model, "classes_", None) is None:
                raise ParameterError(f"this {type(model).__name__} is not fitted (no classes_)")
            self.classes = [str(c) for c in np.asarray(model.classes_).tolist()]
            good = model.good_class_
            self.good_class = None if good is None else str(good)
            if self.good_class is not None:
                self._good_idx = self.classes.index(self.good_class)
            from ..io import classifier_image_shape

            shape = classifier_image_shape(model)
            if shape is None:
                raise ParameterError(f"this {type(model).__name__} knows no image size")
            self.image_shape = (int(shape[0]), int(shape[1]))
            self.threshold = CLASSIFIER_THRESHOLD
            # explanations hook into the shared network: one call at a time
            self._lock: threading.Lock | None = threading.Lock()
        else:
            if not hasattr(model, "threshold_"):
                raise ParameterError(f"this {type(model).__name__} is not fitted; call fit first")
            self.image_shape = (int(model.image_shape_[0]), int(model.image_shape_[1]))
            from ..geometry import resize_mode

            self.resize = resize_mode(model)
            self.threshold = float(model.threshold_)
            self._lock = None
        if threshold is not None:
            self.set_threshold(threshold)

    def set_threshold(self, threshold: float) -> Inspector:
        """Judge with ``threshold`` instead of the model's.

        Raises
        ------
        gaikan.errors.ParameterError
            Not finite, negative, or (classifiers) above 1.
        """
        top = 1.0 if self.family == "classifier" else math.inf
        if not (math.isfinite(threshold) and 0.0 <= threshold <= top):
            what = "in [0, 1] (a probability)" if top == 1.0 else "finite and ≥ 0"
            raise ParameterError(f"threshold must be {what}, got {threshold!r}")
        self.threshold = float(threshold)
        return self

    # -- scoring -----------------------------------------------------------
    def judge(
        self,
        images: np.ndarray,
        files: Sequence[str] | None = None,
        *,
        shapes: Sequence[tuple[int, int]] | None = None,
        labels: Sequence[str | None] | None = None,
        maps: bool = True,
    ) -> list[Inspection]:
        """Inspect a stack of images loaded at :attr:`image_shape`.

        Parameters
        ----------
        images : ndarray, shape (n, H, W), 0–255
        files : sequence of str, optional
            Names of the images (default ``image0`` …).
        shapes : sequence of (int, int), optional
            Each image's original (H, W), for the hottest point's
            coordinates (default: the loaded shape).
        labels : sequence of str or None, optional
            Folder labels (ground truth), carried into the results.
        maps : bool
            Compute display maps.  Detectors always do (it is the same
            pass); a classifier's explanation costs extra and is skipped
            when False.

        Returns
        -------
        list of Inspection, one per image, in order.
        """
        n = len(images)
        files = list(files) if files is not None else [f"image{i}" for i in range(n)]
        labels = list(labels) if labels is not None else [None] * n
        raw: np.ndarray | None
        if self.family == "detector":
            det = self.model.detect(images)
            scores, raw = np.asarray(det.scores, dtype=np.float64), np.asarray(det.maps)
            extras: list[dict[str, Any]] = [{} for _ in range(n)]
        else:
            scores, raw, extras = self._classify(images, maps)
        out = []
        for i in range(n):
            amap = None if raw is None else raw[i]
            shape = tuple(shapes[i]) if shapes is not None else self.image_shape
            out.append(self._result(files[i], float(scores[i]), amap, shape, labels[i], extras[i]))
        return out

    def _classify(
        self, images: np.ndarray, maps: bool
    ) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, Any]]]:
        clf = self.model
        assert self._lock is not None and self.classes is not None
        with self._lock:
            proba = np.asarray(clf.predict_proba(images), dtype=np.float64)
            best = proba.argmax(axis=1)
            expl = (
                np.asarray(clf.explain(images, target=np.asarray(clf.classes_)[best]))
                # an exported classifier carries no explanation: no map, no made-up peak
                if maps and getattr(clf, "explains", True)
                else None
            )
        if self._good_idx is None:
            scores = np.ones(len(images))
        else:
            scores = 1.0 - proba[:, self._good_idx]
        scores[~np.isfinite(proba).all(axis=1)] = np.nan
        extras = [
            {
                "cls": self.classes[int(c)],
                "confidence": float(pr[c]),
                "probabilities": {lab: float(p) for lab, p in zip(self.classes, pr)},
            }
            for pr, c in zip(proba, best)
        ]
        return scores, expl, extras

    def _result(
        self,
        file: str,
        score: float,
        amap: np.ndarray | None,
        shape: tuple[int, ...],
        label: str | None,
        extra: dict[str, Any],
    ) -> Inspection:
        if not math.isfinite(score) or (amap is not None and not np.isfinite(amap).all()):
            return Inspection.failed(
                file,
                f"{file}: the model gave no finite score for this image (a blank or "
                "saturated frame?); check the camera",
                label,
            )
        res = Inspection(
            file=file,
            verdict="defect" if score > self.threshold else "ok",
            score=score,
            threshold=self.threshold,
            label=label,
            **extra,
        )
        if amap is not None:
            display = calibrate(amap, score)
            original = (int(shape[0]), int(shape[1]))
            if self.resize == "pad" and original != tuple(display.shape):
                from ..geometry import mask_pad, placement, point_to_original

                # the pad is not the part: no heat there, the peak inside the content
                place = placement(original, display.shape, "pad")
                display = mask_pad(display, place)
                row, col = point_to_original(*peak(display), place)
            else:
                row, col = peak(display)
                if original != tuple(display.shape):
                    row, col = to_original(row, col, display.shape, original)
            res.display = display
            res.map_max = float(display.max())
            res.map_mean = float(display.mean())
            res.peak_row, res.peak_col = row, col
        return res

    # -- description -------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What is being served: kind, family, image shape, threshold, classes."""
        out: dict[str, Any] = {
            "kind": self.family,
            "detector": self.kind,
            "class": type(self.model).__name__,
            "image_shape": list(self.image_shape),
            "threshold": self.threshold,
            "n_train": getattr(self.model, "n_train_", None),
        }
        if self.family == "classifier":
            out.update(classes=self.classes, good_class=self.good_class)
        return out
