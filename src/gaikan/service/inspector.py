"""Model adaptation for the station: load a model, score uploads, build result dicts.

Two kinds of model are served: fitted anomaly detectors (``detect``,
``image_shape_``, ``threshold_``) and fitted classifiers
(``predict_proba``, ``explain``, ``classes_``).  The station only calls
their public methods.  A classifier's calls are serialised by a lock: its
explanations hook into the shared network, so two concurrent ``explain``
calls could read each other's activations (torch still uses its own
threads inside one call).

Everything here runs in the scoring thread pool (multipart parsing,
decoding, the model, overlay encoding); numpy and gaikan's numba kernels
release the GIL.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .config import ServiceConfig
from .errors import ApiError
from .metrics import ServiceMetrics
from .overlays import OverlayStore
from .uploads import file_label, parse_multipart

__all__ = [
    "CLASSIFIER_THRESHOLD",
    "Inspector",
    "good_class_of",
    "load_model",
    "overlay_scale",
]

log = logging.getLogger("gaikan.service")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def overlay_scale(amap: np.ndarray, threshold: float) -> tuple[float, float]:
    """Linear colour range (vmin, vmax) of an overlay.

    From 0 to ``max(4·threshold, map max)``: a good part stays blue and a
    defect's worst area is red.  When the whole map lies above the
    threshold (a defect raises every patch's D² in self-similarity
    detectors such as SOARTC) the range starts at the map's minimum, so the
    colours still show *where* the part is worst.
    """
    lo, hi = float(np.min(amap)), float(np.max(amap))
    if threshold > 0:
        return (lo if lo > threshold else 0.0), max(4.0 * threshold, hi)
    return lo, hi


#: Score above which a classifier's part is rather not good (score = 1 − P(good)).
CLASSIFIER_THRESHOLD = 0.5


def _is_detector(model: Any) -> bool:
    return all(hasattr(model, a) for a in ("detect", "image_shape_", "threshold_"))


def _is_classifier(model: Any) -> bool:
    return all(hasattr(model, a) for a in ("predict_proba", "explain", "classes_"))


def good_class_of(clf: Any) -> str | None:
    """The label of a classifier's good class, as a string, or None.

    The classifier's fitted ``good_class_`` (else its ``good_class``
    parameter) when that is one of ``classes_``; else the
    class named ``"good"`` (the classifier's own default); else the first
    class whose name is a usual good-folder name (``ok``, ``normal``,
    ``pass``, any case, as :data:`gaikan.io.GOOD_NAMES`); else None: the
    classifier only knows defect types.
    """
    from ..io import GOOD_NAMES

    labels = [str(c) for c in np.asarray(clf.classes_).tolist()]
    good = getattr(clf, "good_class_", None)  # the classifier's own rule, when it has one
    if good is None:
        good = getattr(clf, "good_class", None)
    if good is not None:
        good = str(good.item() if hasattr(good, "item") else good)
        if good in labels:
            return good
    if "good" in labels:
        return "good"
    return next((lab for lab in labels if lab.strip().lower() in GOOD_NAMES), None)


def _classifier_shape(clf: Any) -> tuple[int, int]:
    """(H, W) the classifier was trained at, else its network input size."""
    from ..io import classifier_image_shape

    size = classifier_image_shape(clf)
    if size is None:
        raise TypeError(
            f"this {type(clf).__name__} knows no image size (input_shape_ or image_size)"
        )
    return size


class Inspector:
    """The model plus everything a request needs to score images.

    For an anomaly detector, ``score`` is the detector's image score and
    ``verdict`` is "defect" when ``score > threshold_``.

    For a classifier, every result also carries ``class`` (the predicted
    label), ``confidence`` (its probability) and ``probabilities``; the map
    is ``explain`` of the predicted class (in [0, 1], higher = where the
    network looked).  With a good class (see :func:`good_class_of`) the
    verdict is "ok" exactly when the predicted class is the good class, the
    score is ``1 − P(good)`` (higher = worse) and the reported threshold is
    0.5 (with two classes ``score > 0.5`` is the same as "defect"; with
    more, a good class that wins with less than half the probability is
    still "ok").  Without a good class every class is a defect type: the
    verdict is always "defect", the score is the confidence and the
    threshold is None.
    """

    def __init__(
        self,
        detector: Any,
        config: ServiceConfig,
        metrics: ServiceMetrics,
        overlays: OverlayStore,
        model_name: str | None,
    ) -> None:
        self.det = detector
        self.config = config
        self.metrics = metrics
        self.overlays = overlays
        self.model_name = model_name
        self.is_classifier = not _is_detector(detector)
        self.threshold: float | None
        self.classes: list[str] | None
        self.shape: tuple[int, int]
        if self.is_classifier:
            self.classes = [str(c) for c in np.asarray(detector.classes_).tolist()]
            self.good_class = good_class_of(detector)
            self._good_idx = (
                self.classes.index(self.good_class) if self.good_class is not None else None
            )
            self.shape = _classifier_shape(detector)
            self.threshold = CLASSIFIER_THRESHOLD if self.good_class is not None else None
            self._lock = threading.Lock()
        else:
            self.classes, self.good_class, self._good_idx = None, None, None
            height, width = (int(v) for v in detector.image_shape_)
            self.shape = (height, width)
            self.threshold = float(detector.threshold_)

    @property
    def kind(self) -> str:
        return "classifier" if self.is_classifier else "detector"

    def model_info(self) -> dict[str, Any]:
        from ..modelfile import FORMAT_VERSION

        det = self.det
        params = det.get_params() if hasattr(det, "get_params") else {}
        extra = (
            {"classes": self.classes, "good_class": self.good_class} if self.is_classifier else {}
        )
        return _jsonable(
            {
                "kind": self.kind,
                "detector": getattr(det, "kind", "") or type(det).__name__.lower(),
                "class": type(det).__name__,
                "params": params,
                "image_shape": list(self.shape),
                "threshold": self.threshold,
                **extra,
                "n_train": getattr(det, "n_train_", None),
                "format_version": FORMAT_VERSION,
                "gaikan_version": __version__,
                "model_file": self.model_name,
                "limits": {
                    "max_upload_bytes": self.config.max_upload_bytes,
                    "max_pixels": self.config.max_pixels,
                    "max_files": self.config.max_files,
                },
                "auth": self.config.token is not None,
            }
        )

    def inspect_body(
        self,
        body: bytes,
        content_type: str,
        inline: bool = False,
        overlay: bool = True,
        alpha: float = 0.45,
    ) -> dict[str, Any]:
        """Parse, decode, score and describe every file of one request."""
        from ..errors import GaikanError
        from ..io import decode_image

        t0 = time.perf_counter()
        parts = parse_multipart(body, content_type, self.config.max_files)
        files = [p for p in parts if p.name == "files"]
        if not files:
            names = sorted({p.name for p in parts})
            raise ApiError(
                400,
                "no files: put the images in the multipart field 'files'"
                + (f" (got fields {names})" if names else ""),
            )
        labels = [file_label(p.filename, i) for i, p in enumerate(files)]
        results: list[dict[str, Any]] = [{"file": lab} for lab in labels]
        images, slots = [], []
        internal = 0
        for i, (part, label) in enumerate(zip(files, labels)):
            if not part.data:
                results[i]["error"] = (
                    f"{label}: the file is empty (0 bytes); upload the image again"
                )
                continue
            try:
                img = decode_image(
                    part.data, label, size=self.shape, max_pixels=self.config.max_pixels
                )
            except (GaikanError, ValueError) as exc:
                results[i]["error"] = str(exc)
                continue
            except Exception:  # a decoder bug must not take the batch down
                log.exception("decoding %r failed unexpectedly", label)
                internal += 1
                results[i]["error"] = f"{label}: internal error while decoding this file"
                continue
            images.append(np.asarray(img, dtype=np.float64))
            slots.append(i)
        defects = 0
        for i, img, outcome in self._score(images, slots, results) if images else ():
            label = results[i]["file"]
            if outcome is None:
                internal += 1
                continue
            score, amap, extra = outcome
            if not (math.isfinite(score) and np.isfinite(amap).all()):
                log.warning("non-finite score or map for %r", label)
                results[i]["error"] = (
                    f"{label}: the model gave no finite score for this image "
                    "(a blank or saturated frame?); check the camera"
                )
                continue
            try:
                defects += self._describe(
                    results[i], img, score, amap, extra, inline, overlay, alpha
                )
            except Exception:
                log.exception("describing %r failed", label)
                internal += 1
                results[i] = {
                    "file": label,
                    "error": f"{label}: internal error while rendering the result",
                }
        n_err = sum("error" in r for r in results)
        self.metrics.add(
            images=len(results) - n_err,
            image_errors=n_err,
            defects=defects,
            internal_errors=internal,
        )
        return {
            "results": results,
            "threshold": self.threshold,
            "image_shape": list(self.shape),
            "elapsed_ms": round((time.perf_counter() - t0) * 1000.0, 3),
        }

    def _run_model(self, X: np.ndarray) -> list[tuple[float, np.ndarray, dict[str, Any]]]:
        """One model pass over a stack: per image (score, map, extra result fields)."""
        if not self.is_classifier:
            det = self.det.detect(X)
            return [(float(det.scores[j]), np.asarray(det.maps[j]), {}) for j in range(len(X))]
        clf, classes = self.det, self.classes or []
        with self._lock:
            proba = np.asarray(clf.predict_proba(X), dtype=np.float64)
            best = proba.argmax(axis=1)
            maps = np.asarray(clf.explain(X, target=np.asarray(clf.classes_)[best]))
        if proba.shape != (len(X), len(classes)) or maps.shape[0] != len(X):
            raise ValueError(
                f"the classifier answered shapes {proba.shape} and {maps.shape} for {len(X)} images"
            )
        out = []
        for pr, c, amap in zip(proba, best, maps):
            conf = float(pr[c])
            if self._good_idx is None:
                score, verdict = conf, "defect"
            else:
                score = 1.0 - float(pr[self._good_idx])
                verdict = "ok" if int(c) == self._good_idx else "defect"
            if not np.isfinite(pr).all():
                score = float("nan")
            out.append(
                (
                    score,
                    amap,
                    {
                        "verdict": verdict,
                        "class": classes[int(c)],
                        "confidence": conf,
                        "probabilities": {lab: float(p) for lab, p in zip(classes, pr)},
                    },
                )
            )
        return out

    def _score(self, images: list[np.ndarray], slots: list[int], results: list[dict]):
        """Yield (slot, image, (score, map, extra) or None); one batch pass, per image on failure."""
        try:
            batch = self._run_model(np.stack(images))
        except Exception:
            log.exception("batch scoring failed; retrying image by image")
            batch = None
        if batch is not None:
            for outcome, img, i in zip(batch, images, slots):
                yield i, img, outcome
            return
        for img, i in zip(images, slots):
            try:
                outcome = self._run_model(img[None])[0]
            except Exception:
                log.exception("scoring %r failed", results[i]["file"])
                results[i]["error"] = f"{results[i]['file']}: internal error while scoring"
                yield i, img, None
                continue
            yield i, img, outcome

    def _describe(
        self,
        res: dict[str, Any],
        img: np.ndarray,
        score: float,
        amap: np.ndarray,
        extra: dict[str, Any],
        inline: bool,
        overlay: bool,
        alpha: float,
    ) -> int:
        from ..report import overlay_png

        amap = np.asarray(amap, dtype=np.float64)
        flat = int(np.argmax(amap))
        row, col = divmod(flat, amap.shape[1])
        extra = dict(extra)
        # a detector always has a threshold; a classifier's verdict is in extra
        threshold = self.threshold if self.threshold is not None else math.inf
        verdict = extra.pop("verdict", None) or ("defect" if score > threshold else "ok")
        res.update(
            {
                "score": score,
                "threshold": self.threshold,
                "verdict": verdict,
                **extra,
                "map": {
                    "max": float(amap.reshape(-1)[flat]),
                    "mean": float(amap.mean()),
                    "argmax": {"row": int(row), "col": int(col)},
                    "shape": [int(amap.shape[0]), int(amap.shape[1])],
                },
            }
        )
        if overlay:
            # classifier maps are scaled to [0, 1] by explain (as in gaikan inspect)
            vmin, vmax = (0.0, 1.0) if self.is_classifier else overlay_scale(amap, threshold)
            png = overlay_png(img, amap, vmin=vmin, vmax=vmax, alpha=alpha)
            res["overlay_scale"] = [vmin, vmax]
            if inline:
                res["overlay"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            else:
                key = self.overlays.put(png)
                res["overlay_url"] = f"/v1/overlays/{key}.png" if key else None
        return int(verdict == "defect")


def load_model(model: Any) -> tuple[Any, str | None]:
    """A model file or a fitted model → (anomaly detector or classifier, file name)."""
    name = None
    if isinstance(model, (str, os.PathLike)):
        from .. import load

        name = Path(model).name
        model = load(model)
    if _is_detector(model) or _is_classifier(model):
        return model, name
    what = (
        f"{name} holds a {type(model).__name__}"
        if name
        else (f"create_app got a {type(model).__name__}")
    )
    if hasattr(model, "predict_proba") and hasattr(model, "explain"):
        raise TypeError(f"{what} that is not fitted (no classes_): fit it or load a saved model")
    raise TypeError(
        f"{what}: the station serves fitted anomaly detectors (SOARTC, PaDiM, …; "
        "anything with detect(), image_shape_ and threshold_) and fitted classifiers "
        "(gaikan train; predict_proba(), explain() and classes_)"
    )
