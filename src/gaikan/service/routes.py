"""The station's HTTP routes: the page, health, readiness, model info, metrics,
overlays and ``POST /v1/inspect``.

Routes only parse the request and call the parts built by
:func:`gaikan.service.app.create_app`; limits on who may upload live in
:mod:`.admission` and :mod:`.edge`, body handling in :mod:`.uploads`,
scoring in :mod:`.inspector`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import Counter
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .admission import Admission
from .config import ServiceConfig
from .errors import ApiError
from .inspector import Inspector
from .logs import event
from .metrics import CONTENT_TYPE, ServiceMetrics
from .overlays import OverlayStore
from .recording import RecordingFailed, identity
from .uploads import read_body

__all__ = ["add_routes"]

_STATIC = Path(__file__).parent / "static"
_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/history": ("history.html", "text/html; charset=utf-8"),
    "/static/history.js": ("history.js", "text/javascript; charset=utf-8"),
    "/static/review.js": ("review.js", "text/javascript; charset=utf-8"),
    "/static/api.js": ("api.js", "text/javascript; charset=utf-8"),
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


def add_routes(
    app: FastAPI,
    *,
    inspector: Inspector,
    config: ServiceConfig,
    metrics: ServiceMetrics,
    overlays: OverlayStore,
    admission: Admission,
    pool: Executor,
) -> None:
    """Add every route of the station to ``app``."""
    _add_static(app)
    _add_status(app, inspector, admission, metrics)
    _add_overlays(app, overlays)
    _add_inspect(app, inspector, config, pool)


def _add_static(app: FastAPI) -> None:
    for route, (fname, ctype) in _STATIC_FILES.items():
        handler = _static_handler((_STATIC / fname).read_bytes(), ctype)
        app.add_api_route(route, handler, methods=["GET"], include_in_schema=False)


def _static_handler(data: bytes, ctype: str) -> Any:
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}

    async def handler() -> Response:
        return Response(data, media_type=ctype, headers=headers)

    return handler


def _add_status(
    app: FastAPI, inspector: Inspector, admission: Admission, metrics: ServiceMetrics
) -> None:
    started = time.time()
    model = type(inspector.det).__name__

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        ready, reason = admission.readiness()
        return {
            "status": "ok",
            "uptime_s": round(time.time() - started, 3),
            "model": model,
            "ready": ready,
            "reason": reason,
        }

    @app.get("/readyz")
    async def readyz() -> Response:
        ready, reason = admission.readiness()
        body = {
            "ready": ready,
            "reason": reason,
            "inflight": admission.inflight,
            "max_inflight": admission.max_inflight,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/model")
    def model_info() -> dict[str, Any]:
        # one inspector throughout: a model activated meanwhile is not mixed in
        served = getattr(inspector, "current", inspector)
        info = served.model_info()
        rec = served.recorder
        if rec is not None:
            info["model_id"], info["model_version"] = rec.model_id, rec.model_version
            info["record"] = {
                "model_id": rec.model_id,
                "model_version": rec.model_version,
                "station": rec.station,
                "database": rec.store.safe_url,
                "keep": rec.store.retention.keep,
            }
            info["active_version"] = rec.active_model()
        return info

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_overlays(app: FastAPI, overlays: OverlayStore) -> None:
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


def _add_inspect(app: FastAPI, inspector: Inspector, config: ServiceConfig, pool: Executor) -> None:
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
        body = await read_body(request.stream(), request.headers, config.max_upload_bytes)
        host = request.client.host if request.client else None
        client = identity(host, config.token is not None)
        work = functools.partial(inspector.inspect_request, body, ctype, inline, overlay, alpha)
        payload, uploads = await asyncio.get_running_loop().run_in_executor(pool, work)
        if inspector.recorder is not None:
            # committed before the answer is sent (group commit: no scoring thread waits)
            try:
                ids = await asyncio.wrap_future(inspector.recorder.submit(uploads, client))
            except RecordingFailed:
                raise inspector.not_recorded() from None
            inspector.attach_ids(payload, ids)
        _note_results(request, payload["results"])
        return Response(json.dumps(payload, allow_nan=False), media_type="application/json")


def _note_results(request: Request, results: list[dict[str, Any]]) -> None:
    """Verdict counts for the access log; one log line per rejected file."""
    counts = Counter("error" if "error" in r else str(r.get("verdict")) for r in results)
    request.state.verdicts = {k: counts.get(k, 0) for k in ("ok", "defect", "error")}
    request_id = getattr(request.state, "request_id", None)
    for r in results:
        if "error" in r:
            event("file_rejected", request_id=request_id, file=r["file"], reason=r["error"])


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
