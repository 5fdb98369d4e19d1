"""The station's side of an inspection: uploads in, :mod:`gaikan.inspection` results out.

Scores, verdicts, display maps, hottest points and overlay colours are not
decided here: :class:`gaikan.inspection.Inspector` decides them for every
face of gaikan, so the station answers exactly what ``gaikan inspect`` and
its report say for the same model and file.  This module parses an upload,
decodes each file (with its original size, for the hottest point), runs
the shared inspector on the stack (image by image if the batch fails, so
one bad file never takes the others down), and renders the JSON and the
overlays.

Everything here runs in the scoring thread pool (multipart parsing,
decoding, the model, overlay encoding); numpy and gaikan's numba kernels
release the GIL.  A classifier's calls are serialised inside the shared
inspector (its explanations hook into the network).
"""

from __future__ import annotations

import base64
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..inspection import Inspection
from ..inspection import Inspector as CoreInspector
from ..inspection.display import legend, overlay_png
from .config import ServiceConfig
from .errors import ApiError
from .metrics import ServiceMetrics
from .overlays import OverlayStore
from .recording import Recorder, RecordingFailed, Upload
from .uploads import file_label, parse_multipart

__all__ = ["Inspector", "load_model"]

log = logging.getLogger("gaikan.service")

#: Heatmap opacity of the overlays kept with the records (overlay_png's default).
KEPT_ALPHA = 0.45


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


class Inspector:
    """The served model plus what a request needs around it.

    Attributes
    ----------
    core : gaikan.inspection.Inspector
        Decides scores, verdicts and maps.
    det : the model
    shape : (int, int)
        (H, W) uploads are resized to.
    threshold : float
    is_classifier : bool
    classes, good_class : list of str / str, or None
    """

    def __init__(
        self,
        model: Any,
        config: ServiceConfig,
        metrics: ServiceMetrics,
        overlays: OverlayStore,
        model_name: str | None,
        recorder: Recorder | None = None,
    ) -> None:
        self.core = CoreInspector(model)
        self.recorder = recorder
        self.det = model
        self.config = config
        self.metrics = metrics
        self.overlays = overlays
        self.model_name = model_name
        self.is_classifier = self.core.family == "classifier"
        self.classes = self.core.classes
        self.good_class = self.core.good_class
        self.shape = self.core.image_shape
        self.threshold = self.core.threshold

    @property
    def kind(self) -> str:
        return self.core.family

    def model_info(self) -> dict[str, Any]:
        from ..modelfile import FORMAT_VERSION

        det = self.det
        params = det.get_params() if hasattr(det, "get_params") else {}
        return _jsonable(
            {
                **self.core.describe(),
                "params": params,
                "format_version": FORMAT_VERSION,
                "gaikan_version": __version__,
                "model_file": self.model_name,
                "colours": legend(self.threshold),
                "limits": {
                    "max_upload_bytes": self.config.max_upload_bytes,
                    "max_pixels": self.config.max_pixels,
                    "max_files": self.config.max_files,
                },
                "auth": self.config.token is not None,
            }
        )

    # -- one request --------------------------------------------------------
    def inspect_body(
        self,
        body: bytes,
        content_type: str,
        inline: bool = False,
        overlay: bool = True,
        alpha: float = 0.45,
        client: str | None = None,
    ) -> dict[str, Any]:
        """Parse, decode, inspect, describe and (with a recorder) record every file of a request.

        With a recorder, every result (errors included) is committed to the
        database before this returns, and each result dict gets its record
        ``id``; a failed commit is a 503 :class:`ApiError` (no verdict given).
        The HTTP route does the same without holding a scoring thread while
        the commit waits (:meth:`inspect_request`, then :meth:`Recorder.submit
        <gaikan.service.recording.Recorder.submit>` awaited).
        """
        payload, uploads = self.inspect_request(body, content_type, inline, overlay, alpha)
        if self.recorder is not None:
            try:
                ids = self.recorder.record(uploads, client)
            except RecordingFailed:
                raise self.not_recorded() from None
            self.attach_ids(payload, ids)
        return payload

    def not_recorded(self) -> ApiError:
        """The 503 of a request whose results could not be committed."""
        self.metrics.add(internal_errors=1)
        return ApiError(
            503,
            "the results could not be recorded in the station database (logged on the "
            "server); no verdict is given: send the images again",
            {"Retry-After": "1"},
        )

    @staticmethod
    def attach_ids(payload: dict[str, Any], ids: list[int]) -> None:
        """Give each result of ``payload`` its record id."""
        for desc, rid in zip(payload["results"], ids):
            desc["id"] = rid

    def inspect_request(
        self,
        body: bytes,
        content_type: str,
        inline: bool = False,
        overlay: bool = True,
        alpha: float = 0.45,
    ) -> tuple[dict[str, Any], list[Upload]]:
        """Parse, decode, inspect and describe every file of one request.

        Returns
        -------
        payload : dict
            The JSON answer (without record ids).
        uploads : list of Upload
            What to record, one per result (empty without a recorder).
        """
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
        decoded, results, internal = self._decode_all([p.data for p in files], labels)
        ok = [i for i in range(len(files)) if results[i] is None]
        if ok:
            judged, failed = self._judge([decoded[i] for i in ok], [labels[i] for i in ok])
            internal += failed
            for i, done in zip(ok, judged):
                results[i] = done
        out, pngs = [], []
        for i, res in enumerate(results):
            assert res is not None
            keep = self.recorder is not None and self.recorder.keeps(res.verdict)
            desc, png = self._describe(res, decoded.get(i), inline, overlay, alpha, keep)
            out.append(desc)
            pngs.append(png)
        uploads: list[Upload] = []
        if self.recorder is not None:
            latency_ms = (time.perf_counter() - t0) * 1000.0
            uploads = [
                Upload(res, p.data, png, latency_ms)
                for res, p, png in zip(results, files, pngs)
                if res is not None
            ]
        n_err = sum(r.is_error for r in results if r is not None)
        self.metrics.add(
            images=len(out) - n_err,
            image_errors=n_err,
            defects=sum(r.verdict == "defect" for r in results if r is not None),
            internal_errors=internal,
        )
        payload = {
            "results": out,
            "threshold": self.threshold,
            "image_shape": list(self.shape),
            "elapsed_ms": round((time.perf_counter() - t0) * 1000.0, 3),
        }
        return payload, uploads

    def _decode_all(
        self, datas: list[bytes], labels: list[str]
    ) -> tuple[dict[int, tuple[np.ndarray, tuple[int, int]]], list[Inspection | None], int]:
        """Decode every file: {slot: (image, original shape)}, failures as results."""
        from ..errors import GaikanError
        from ..io import decode_upload

        decoded: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
        results: list[Inspection | None] = [None] * len(datas)
        internal = 0
        for i, (data, label) in enumerate(zip(datas, labels)):
            if not data:
                results[i] = Inspection.failed(
                    label, f"{label}: the file is empty (0 bytes); upload the image again"
                )
                continue
            try:
                img, original = decode_upload(
                    data,
                    label,
                    size=self.shape,
                    max_pixels=self.config.max_pixels,
                    resize=self.core.resize,
                )
            except (GaikanError, ValueError) as exc:
                results[i] = Inspection.failed(label, str(exc))
                continue
            except Exception:
                log.exception("decoding %r failed unexpectedly", label)
                internal += 1
                results[i] = Inspection.failed(label, f"{label}: internal error while decoding")
                continue
            decoded[i] = (np.asarray(img, dtype=np.float64), original)
        return decoded, results, internal

    def _judge(
        self, items: list[tuple[np.ndarray, tuple[int, int]]], labels: list[str]
    ) -> tuple[list[Inspection], int]:
        """The shared inspector over the stack; image by image if the batch fails."""
        stack = np.stack([img for img, _ in items])
        shapes = [shape for _, shape in items]
        try:
            return self.core.judge(stack, labels, shapes=shapes), 0
        except Exception:
            log.exception("batch scoring failed; retrying image by image")
        out, failed = [], 0
        for img, shape, label in zip(stack, shapes, labels):
            try:
                out.append(self.core.judge(img[None], [label], shapes=[shape])[0])
            except Exception:
                log.exception("scoring %r failed", label)
                failed += 1
                out.append(Inspection.failed(label, f"{label}: internal error while scoring"))
        return out, failed

    def _describe(
        self,
        res: Inspection,
        item: tuple[np.ndarray, tuple[int, int]] | None,
        inline: bool,
        overlay: bool,
        alpha: float,
        keep: bool = False,
    ) -> tuple[dict[str, Any], bytes | None]:
        """The JSON of one result, with its overlay (inline or by URL), and the PNG to keep.

        The client's overlay uses its ``alpha``; the kept one (``keep``: the
        record keeps this verdict's pictures) always the default opacity, so
        every stored overlay looks the same whoever asked.
        """
        out = _jsonable(res.to_json())
        if res.is_error or item is None or res.display is None:
            return out, None
        out["map"]["shape"] = list(item[1])  # the hottest point is in the original's pixels
        png = kept = None
        try:
            if overlay:
                png = overlay_png(item[0], res.display, self.threshold, alpha=alpha)
            if keep:
                same = png is not None and alpha == KEPT_ALPHA
                kept = png if same else overlay_png(item[0], res.display, self.threshold)
        except Exception:
            log.exception("rendering the overlay of %r failed", res.file)
        if png is not None:
            if inline:
                out["overlay"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            else:
                key = self.overlays.put(png)
                out["overlay_url"] = f"/v1/overlays/{key}.png" if key else None
        return out, kept


def load_model(model: Any) -> tuple[Any, str | None]:
    """A model file or a fitted model → (model, file name); refuses what cannot be served."""
    from ..errors import ParameterError

    name = None
    if isinstance(model, (str, os.PathLike)):
        from .. import load

        name = Path(model).name
        model = load(model)
    try:
        CoreInspector(model)
    except ParameterError as exc:
        what = f"{name} holds a {type(model).__name__}" if name else type(model).__name__
        raise TypeError(
            f"{what} cannot be served: {exc} (the station serves fitted gaikan detectors and "
            "classifiers)"
        ) from None
    return model, name
