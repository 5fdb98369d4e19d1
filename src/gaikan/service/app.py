"""The inspection station's ASGI app: REST API, metrics and the single-page UI.

Design notes
------------
- The model is loaded once and shared read-only by every request; scoring
  (multipart parsing, decoding, ``detect``, overlay encoding) runs in a
  thread pool because numpy and gaikan's numba kernels release the GIL.
- Two kinds of model are served: fitted anomaly detectors (``detect``,
  ``image_shape_``, ``threshold_``) and fitted classifiers
  (``predict_proba``, ``explain``, ``classes_``).  The service only calls
  their public methods.  A classifier's calls are serialised by a lock:
  its explanations hook into the shared network, so two concurrent
  ``explain`` calls could read each other's activations (torch still uses
  its own threads inside one call).
- Request bodies are read into memory with a hard size cap and parsed with
  python-multipart's streaming parser, so nothing from a request is ever
  written to disk and client filenames are only labels, never paths.
- Overlay PNGs live in a bounded in-memory LRU (entries, bytes and age
  limits) behind unguessable URLs, or are returned inline on request.
- Every user error is a 4xx JSON body ``{"error": ..., "status": ...}``;
  only a bug in gaikan reaches the catch-all handler, which logs it and
  returns a bare JSON 500 (counted by ``gaikan_internal_errors_total``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "ServiceConfig", "create_app"]

log = logging.getLogger("gaikan.service")

#: Default cap on one request body (all files together).
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Default cap on the pixels of one decoded image (before resizing).
DEFAULT_MAX_PIXELS = 25_000_000
#: Default cap on files per request.
DEFAULT_MAX_FILES = 64

_STATIC = Path(__file__).parent / "static"
_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
}
#: Latency histogram buckets (seconds).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Path labels for metrics (anything else is "other": no label explosion).
_KNOWN_PATHS = (
    "/",
    "/healthz",
    "/metrics",
    "/v1/inspect",
    "/v1/model",
    "/static/app.js",
    "/static/app.css",
)


class ApiError(Exception):
    """A client error answered with a JSON body and a 4xx status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class ServiceConfig:
    """Limits and knobs of one service instance."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = DEFAULT_MAX_FILES
    workers: int = 1
    max_inflight: int = 64
    overlay_entries: int = 512
    overlay_bytes: int = 64 * 1024 * 1024
    overlay_ttl_s: float = 3600.0
    token: str | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------
# metrics (Prometheus text exposition format 0.0.4, written by hand)
# ---------------------------------------------------------------------------
class Metrics:
    """Thread-safe counters and histograms rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.hist: dict[str, list[float]] = {}  # path → bucket counts + [sum, count]
        self.images = 0
        self.image_errors = 0
        self.defects = 0
        self.internal_errors = 0
        self.inflight = 0

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, path, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            if status >= 400:
                ek = (path, str(status))
                self.errors[ek] = self.errors.get(ek, 0) + 1
            h = self.hist.get(path)
            if h is None:
                h = self.hist[path] = [0.0] * (len(_BUCKETS) + 2)
            for i, b in enumerate(_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def add(
        self, images: int = 0, image_errors: int = 0, defects: int = 0, internal_errors: int = 0
    ) -> None:
        with self._lock:
            self.images += images
            self.image_errors += image_errors
            self.defects += defects
            self.internal_errors += internal_errors

    def render(self, extra_gauges: dict[str, tuple[str, float]]) -> str:
        def esc(v: str) -> str:
            return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        def num(v: float) -> str:
            if isinstance(v, int) or float(v).is_integer():
                return str(int(v))
            return repr(float(v))

        out: list[str] = []
        with self._lock:
            out += [
                "# HELP gaikan_http_requests_total HTTP requests by method, path and status.",
                "# TYPE gaikan_http_requests_total counter",
            ]
            for (m, p, s), n in sorted(self.requests.items()):
                out.append(
                    f'gaikan_http_requests_total{{method="{esc(m)}",path="{esc(p)}",'
                    f'status="{s}"}} {n}'
                )
            out += [
                "# HELP gaikan_http_request_errors_total HTTP responses with status >= 400.",
                "# TYPE gaikan_http_request_errors_total counter",
            ]
            for (p, s), n in sorted(self.errors.items()):
                out.append(f'gaikan_http_request_errors_total{{path="{esc(p)}",status="{s}"}} {n}')
            out += [
                "# HELP gaikan_http_request_duration_seconds HTTP request latency.",
                "# TYPE gaikan_http_request_duration_seconds histogram",
            ]
            for p, h in sorted(self.hist.items()):
                lp = esc(p)
                for i, b in enumerate(_BUCKETS):
                    out.append(
                        f'gaikan_http_request_duration_seconds_bucket{{path="{lp}",'
                        f'le="{b}"}} {int(h[i])}'
                    )
                out.append(
                    f'gaikan_http_request_duration_seconds_bucket{{path="{lp}",'
                    f'le="+Inf"}} {int(h[-1])}'
                )
                out.append(f'gaikan_http_request_duration_seconds_sum{{path="{lp}"}} {h[-2]!r}')
                out.append(
                    f'gaikan_http_request_duration_seconds_count{{path="{lp}"}} {int(h[-1])}'
                )
            for name, help_, value in (
                ("gaikan_images_inspected_total", "Images scored.", self.images),
                (
                    "gaikan_image_errors_total",
                    "Uploaded files rejected with a per-file error.",
                    self.image_errors,
                ),
                ("gaikan_defects_found_total", "Images judged 'defect'.", self.defects),
                (
                    "gaikan_internal_errors_total",
                    "Bugs caught by the catch-all handler.",
                    self.internal_errors,
                ),
            ):
                out += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]
            gauges = {
                "gaikan_inspect_inflight": ("Inspect requests being served.", float(self.inflight))
            }
        gauges.update(extra_gauges)
        for name, (help_, value) in gauges.items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {num(value)}"]
        return "\n".join(out) + "\n"


def _rss_bytes() -> float | None:
    """Resident set size of this process (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


# ---------------------------------------------------------------------------
# overlays: bounded, expiring, in memory
# ---------------------------------------------------------------------------
class OverlayStore:
    """LRU of overlay PNGs bounded by entries, total bytes and age."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max(0, int(max_entries))
        self.max_bytes = max(0, int(max_bytes))
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.nbytes = 0

    def put(self, png: bytes) -> str | None:
        """Store ``png``; its key, or None when the store is disabled or it is too big."""
        if self.max_entries == 0 or len(png) > self.max_bytes:
            return None
        key = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            self._items[key] = (now, png)
            self.nbytes += len(png)
            self._evict(now)
        return key

    def get(self, key: str) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            self._evict(now)
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[1]

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self, now: float) -> None:
        items = self._items
        while items and (
            len(items) > self.max_entries
            or self.nbytes > self.max_bytes
            or now - next(iter(items.values()))[0] > self.ttl_s
        ):
            _, (_, png) = items.popitem(last=False)
            self.nbytes -= len(png)


# ---------------------------------------------------------------------------
# multipart parsing (in memory; filenames are labels only)
# ---------------------------------------------------------------------------
@dataclass
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Split a multipart/form-data body into parts.

    Raises
    ------
    ApiError
        415 for another content type, 400 for a malformed or truncated
        body, 413 for more than ``max_parts`` parts.
    """
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise ApiError(415, "send the images as multipart/form-data in the field 'files'")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "multipart/form-data without a valid boundary parameter")

    raw: list[tuple[dict[bytes, bytes], bytearray]] = []
    cur: dict[str, Any] = {}
    hfield, hvalue = bytearray(), bytearray()
    done = [False]

    def on_part_begin() -> None:
        if len(raw) >= max_parts:
            raise ApiError(413, f"too many parts in one request (at most {max_parts} files)")
        cur["headers"], cur["data"] = {}, bytearray()

    def on_header_field(d: bytes, s: int, e: int) -> None:
        hfield.extend(d[s:e])

    def on_header_value(d: bytes, s: int, e: int) -> None:
        hvalue.extend(d[s:e])

    def on_header_end() -> None:
        cur["headers"][bytes(hfield).strip().lower()] = bytes(hvalue).strip()
        hfield.clear()
        hvalue.clear()

    def on_part_data(d: bytes, s: int, e: int) -> None:
        cur["data"].extend(d[s:e])

    def on_part_end() -> None:
        raw.append((cur["headers"], cur["data"]))

    def on_end() -> None:
        done[0] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    if not done[0]:
        raise ApiError(
            400, "malformed multipart body: it ends before the closing boundary (truncated upload?)"
        )
    parts = []
    for headers, data in raw:
        disp, opts = parse_options_header(
            headers.get(b"content-disposition", b"").decode("latin-1")
        )
        if disp != b"form-data":
            raise ApiError(
                400, "malformed multipart body: a part lacks 'Content-Disposition: form-data'"
            )
        name = _text(opts.get(b"name", b""))
        filename = _text(opts[b"filename"]) if b"filename" in opts else None
        ptype = headers.get(b"content-type", b"").decode("latin-1")
        parts.append(Part(name, filename, ptype, bytes(data)))
    return parts


def _text(raw: bytes) -> str:
    """Header parameter bytes (latin-1 on the wire, UTF-8 from browsers) → str."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def file_label(filename: str | None, index: int) -> str:
    """A display label for an uploaded file: never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:200]
    return name or f"file{index + 1}"


# ---------------------------------------------------------------------------
# the inspection core (runs in the thread pool)
# ---------------------------------------------------------------------------
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
        metrics: Metrics,
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
            self.shape = tuple(int(v) for v in detector.image_shape_)
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
        clf = self.det
        with self._lock:
            proba = np.asarray(clf.predict_proba(X), dtype=np.float64)
            best = proba.argmax(axis=1)
            maps = np.asarray(clf.explain(X, target=np.asarray(clf.classes_)[best]))
        if proba.shape != (len(X), len(self.classes)) or maps.shape[0] != len(X):
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
                        "class": self.classes[int(c)],
                        "confidence": conf,
                        "probabilities": {lab: float(p) for lab, p in zip(self.classes, pr)},
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
        from ..inspection.display import calibrate, overlay_png

        amap = np.asarray(amap, dtype=np.float64)
        flat = int(np.argmax(amap))
        row, col = divmod(flat, amap.shape[1])
        extra = dict(extra)
        verdict = extra.pop("verdict", None) or ("defect" if score > self.threshold else "ok")
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
            # interim: the inspection layer's colour policy (the service moves onto
            # gaikan.inspection in the station split)
            vmin, vmax = (0.0, 1.0) if self.is_classifier else overlay_scale(amap, self.threshold)
            png = overlay_png(img, calibrate(amap, score), self.threshold or 0.5, alpha=alpha)
            res["overlay_scale"] = [vmin, vmax]
            if inline:
                res["overlay"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            else:
                key = self.overlays.put(png)
                res["overlay_url"] = f"/v1/overlays/{key}.png" if key else None
        return int(verdict == "defect")


# ---------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------
def _load_model(model: Any) -> tuple[Any, str | None]:
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


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    return JSONResponse(payload, status_code=status, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    return _json(status, {"error": message, "status": status}, headers)


def _flag(params: Any, name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(400, f"query parameter {name!r} must be 0 or 1, got {raw!r}")


def _fraction(params: Any, name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"query parameter {name!r} must be a number in [0, 1], got {raw!r}")
    return value


async def _read_body(receive_stream: Any, headers: Any, limit: int) -> bytes:
    """Read a request body of at most ``limit`` bytes (413 beyond it).

    An oversized body is drained (up to a hard cap) before answering so that
    clients which send the whole body first still read a clean 413.
    """
    too_big = ApiError(
        413,
        f"the upload exceeds the server limit of {limit} bytes "
        f"({limit / 2**20:.1f} MiB); send fewer or smaller files",
    )
    declared = headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > 8 * limit + (1 << 20):
            raise too_big
    chunks, total = [], 0
    try:
        async for chunk in receive_stream:
            total += len(chunk)
            if total <= limit:
                chunks.append(chunk)
            elif total > 8 * limit + (1 << 20):
                raise too_big
    except ClientDisconnect:
        raise ApiError(400, "the client went away before the upload was complete") from None
    if total > limit:
        raise too_big
    return b"".join(chunks)


def create_app(
    model_path_or_detector: Any,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    max_files: int = DEFAULT_MAX_FILES,
    max_inflight: int | None = None,
    overlay_entries: int = 512,
    overlay_bytes: int = 64 * 1024 * 1024,
    overlay_ttl_s: float = 3600.0,
):
    """Build the inspection station's FastAPI app around one model.

    Parameters
    ----------
    model_path_or_detector : str, os.PathLike, fitted detector or fitted classifier
        A gaikan model file (any kind :func:`gaikan.load` opens), an
        already fitted anomaly detector (anything with ``detect``,
        ``image_shape_`` and ``threshold_``) or an already fitted
        classifier (:class:`gaikan.deep.classifier.Classifier`: anything
        with ``predict_proba``, ``explain`` and ``classes_``; its results
        carry the class, see :class:`Inspector` for its verdict and score).
        It is shared read-only by all requests.
    token : str, optional
        Shared bearer token.  When set, every ``/v1/*`` and ``/metrics``
        call needs ``Authorization: Bearer <token>`` (else 401); ``/``, the
        static UI files and ``/healthz`` stay open.
    max_upload_bytes : int
        Cap on one request body (413 beyond it).
    max_pixels : int
        Cap on the pixels of one decoded image (per-file error beyond it).
    workers : int, optional
        Scoring threads; default the CPUs this process may use.
    max_files : int
        Cap on files per request (413 beyond it).
    max_inflight : int, optional
        Inspect requests accepted at once (503 beyond it); default
        ``max(64, 8 * workers)``.  Bounds memory under overload.
    overlay_entries, overlay_bytes, overlay_ttl_s
        Bounds of the in-memory overlay LRU behind ``overlay_url``.

    Returns
    -------
    fastapi.FastAPI
    """
    if token is not None and not (
        str(token)
        and str(token).isascii()
        and str(token).isprintable()
        and str(token).strip() == str(token)
    ):
        raise ValueError(
            "the token must be non-empty printable ASCII without surrounding spaces "
            "(it travels in an HTTP header)"
        )
    if max_upload_bytes <= 0 or max_pixels <= 0 or max_files <= 0:
        raise ValueError("max_upload_bytes, max_pixels and max_files must be positive")
    detector, model_name = _load_model(model_path_or_detector)
    nworkers = int(workers) if workers else _default_workers()
    if nworkers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = ServiceConfig(
        max_upload_bytes=int(max_upload_bytes),
        max_pixels=int(max_pixels),
        max_files=int(max_files),
        workers=nworkers,
        max_inflight=int(max_inflight) if max_inflight else max(64, 8 * nworkers),
        overlay_entries=overlay_entries,
        overlay_bytes=overlay_bytes,
        overlay_ttl_s=overlay_ttl_s,
        token=str(token) if token is not None else None,
    )
    metrics = Metrics()
    overlays = OverlayStore(overlay_entries, overlay_bytes, overlay_ttl_s)
    inspector = Inspector(detector, config, metrics, overlays, model_name)
    pool = ThreadPoolExecutor(max_workers=nworkers, thread_name_prefix="gaikan-score")
    static = {
        route: ((_STATIC / fname).read_bytes(), ctype)
        for route, (fname, ctype) in _STATIC_FILES.items()
    }
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: Any):
        if inspector.is_classifier:
            log.info(
                "serving %s (%s, image %dx%d, classes %s, good class %r) with %d scoring threads",
                model_name or "in-memory model",
                type(detector).__name__,
                *inspector.shape,
                ", ".join(inspector.classes),
                inspector.good_class,
                nworkers,
            )
            if inspector.good_class is None:
                log.warning(
                    "the classifier has no good class (good_class, or a class named "
                    "good/ok/normal/pass): every image will be judged 'defect'"
                )
        else:
            log.info(
                "serving %s (%s, image %dx%d, threshold %.6g) with %d scoring threads",
                model_name or "in-memory model",
                type(detector).__name__,
                *inspector.shape,
                inspector.threshold,
                nworkers,
            )
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="gaikan inspection station",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.inspector = inspector
    app.state.metrics = metrics
    app.state.config = config

    # -- errors: JSON bodies only, never a traceback -----------------------
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            msg = f"no such endpoint or resource: {request.url.path}"
        elif exc.status_code == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, msg, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error(422, f"invalid request: {exc.errors()[:3]}")

    def _bug(scope: dict, exc: Exception):
        # Only a bug gets here: user errors are ApiError / per-file errors.
        log.error(
            "internal error on %s %s",
            scope.get("method"),
            scope.get("path"),
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        metrics.add(internal_errors=1)
        return _error(500, "internal server error (logged on the server)")

    # -- routes -------------------------------------------------------------
    def _static(route: str):
        data, ctype = static[route]

        async def handler() -> Response:
            return Response(
                data, media_type=ctype, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
            )

        return handler

    for route in static:
        app.add_api_route(route, _static(route), methods=["GET"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - started, 3),
            "model": type(detector).__name__,
        }

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return inspector.model_info()

    @app.get("/metrics")
    async def prometheus() -> Response:
        gauges: dict[str, tuple[str, float]] = {}
        if inspector.threshold is not None:  # None: a classifier without a good class
            gauges["gaikan_model_threshold"] = (
                "Image-score threshold of the served model.",
                inspector.threshold,
            )
        gauges.update(
            {
                "gaikan_overlay_cache_entries": ("Overlay PNGs held in memory.", len(overlays)),
                "gaikan_overlay_cache_bytes": (
                    "Bytes of overlay PNGs held in memory.",
                    overlays.nbytes,
                ),
                "gaikan_scoring_threads": ("Size of the scoring thread pool.", nworkers),
            }
        )
        rss = _rss_bytes()
        if rss is not None:
            gauges["process_resident_memory_bytes"] = ("Resident memory size in bytes.", rss)
        return Response(
            metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/v1/overlays/{key}.png")
    async def get_overlay(key: str) -> Response:
        png = overlays.get(key) if len(key) < 64 else None
        if png is None:
            raise ApiError(
                404,
                "overlay not found: it expired or was evicted; inspect the "
                "image again (or ask for ?inline=1)",
            )
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
        )

    @app.post("/v1/inspect")
    async def inspect(request: Request) -> Response:
        inline = _flag(request.query_params, "inline", False)
        overlay = _flag(request.query_params, "overlay", True)
        alpha = _fraction(request.query_params, "alpha", 0.45)
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise ApiError(
                415,
                "send the images as multipart/form-data in the field 'files' "
                f"(got Content-Type {ctype[:80]!r})",
            )
        if metrics.inflight >= config.max_inflight:
            raise ApiError(503, "the station is busy; retry shortly", {"Retry-After": "1"})
        metrics.inflight += 1  # only touched on the event loop thread
        try:
            body = await _read_body(request.stream(), request.headers, config.max_upload_bytes)
            loop = asyncio.get_running_loop()
            payload = await loop.run_in_executor(
                pool, functools.partial(inspector.inspect_body, body, ctype, inline, overlay, alpha)
            )
        finally:
            metrics.inflight -= 1
        return Response(json.dumps(payload, allow_nan=False), media_type="application/json")

    # -- auth + metrics: a plain ASGI wrapper -------------------------------
    expected = f"Bearer {config.token}".encode() if config.token is not None else None

    def protected(path: str) -> bool:
        return path.startswith("/v1/") or path == "/metrics"

    class _Edge:
        """Outermost layer: bearer-token check and request metrics."""

        def __init__(self, asgi: Any) -> None:
            self.asgi = asgi

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.asgi(scope, receive, send)
                return
            path = scope.get("path", "")
            label = (
                path
                if path in _KNOWN_PATHS
                else ("/v1/overlays" if path.startswith("/v1/overlays/") else "other")
            )
            status, started = [500], [False]
            t0 = time.perf_counter()

            async def send_wrapper(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = int(message["status"])
                    started[0] = True
                await send(message)

            try:
                if expected is not None and protected(path):
                    got = b""
                    for k, v in scope.get("headers", []):
                        if k == b"authorization":
                            got = v
                    if not hmac.compare_digest(got, expected):
                        resp = _error(
                            401,
                            "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                            {"WWW-Authenticate": 'Bearer realm="gaikan"'},
                        )
                        await resp(scope, receive, send_wrapper)
                        return
                try:
                    await self.asgi(scope, receive, send_wrapper)
                except Exception as exc:
                    # The catch-all: answered here (not by Starlette's
                    # ServerErrorMiddleware, which re-raises and makes the
                    # server drop the keep-alive connection).
                    if started[0]:
                        raise
                    await _bug(scope, exc)(scope, receive, send_wrapper)
            finally:
                metrics.observe_request(
                    scope.get("method", ""), label, status[0], time.perf_counter() - t0
                )

    app.add_middleware(_Edge)
    return app
