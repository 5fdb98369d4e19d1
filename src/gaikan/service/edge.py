"""The outermost ASGI layer: request ids, auth, admission, the read deadline,
metrics, the access log and the catch-all for bugs.

Order for one HTTP request: give it a request id (the client's
``X-Request-ID`` when it is a short token, else a fresh one; returned as
``X-Request-ID``), check the bearer token (``/v1/*`` and ``/metrics``),
admit an upload (the in-flight and per-client caps of :mod:`.admission`),
then run the app with a ``receive`` that answers 408 (and closes the
connection) when the body is not complete ``read_timeout_s`` after the
request arrived.  Whatever happens, the request is counted in the metrics
and logged as one JSON line.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from typing import Any

from .admission import Admission
from .config import ServiceConfig
from .errors import ApiError, error_response
from .logs import event
from .metrics import ServiceMetrics

__all__ = ["Edge", "route_label"]

log = logging.getLogger("gaikan.service")

#: Path labels for metrics (anything else is "other": no label explosion).
KNOWN_PATHS = frozenset(
    (
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/inspect",
        "/v1/model",
        "/v1/inspections",
        "/v1/inspections.csv",
        "/v1/stats",
        "/openapi.json",
        "/static/app.js",
        "/static/app.css",
        "/static/i18n.js",
        "/v1/i18n",
        "/v1/models",
        "/v1/models/refit",
        "/models",
        "/static/models.js",
        "/history",
        "/static/history.js",
        "/static/review.js",
        "/static/api.js",
        "/v1/control",
        "/v1/identity",
    )
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def route_label(path: str) -> str:
    """The bounded metrics label of a request path."""
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/v1/overlays/"):
        return "/v1/overlays"
    if path.startswith("/v1/models/refits/"):
        return "/v1/models/refits/{job}"
    if path.startswith("/v1/models/") and path.endswith("/activate"):
        return "/v1/models/{version}/activate"
    return "/v1/inspections/{id}" if path.startswith("/v1/inspections/") else "other"


def _header(scope: dict, name: bytes) -> bytes:
    for k, v in scope.get("headers", []):
        if k == name:
            return v
    return b""


def _request_id(scope: dict) -> str:
    given = _header(scope, b"x-request-id").decode("latin-1")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


class _Exchange:
    """One request's bookkeeping and its ``send`` (which adds X-Request-ID)."""

    def __init__(self, scope: dict, send: Any) -> None:
        self.request_id = _request_id(scope)
        client = scope.get("client")
        self.client = str(client[0]) if client else "unknown"
        self.status = 500
        self.started = False
        self.t0 = time.perf_counter()
        self._send = send
        scope.setdefault("state", {})["request_id"] = self.request_id

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.started = True
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", self.request_id.encode("ascii")))
            message = {**message, "headers": headers}
        await self._send(message)


def _deadline_receive(receive: Any, timeout_s: float) -> Any:
    """``receive`` that raises a 408 ApiError when the body is not complete in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body_done = False

    async def wrapped() -> dict:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise ApiError(
                408,
                f"the upload did not arrive within {timeout_s:g} s; check the network "
                "and send it again",
                {"Connection": "close"},
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return wrapped


class Edge:
    """ASGI middleware: see the module docstring.

    Parameters
    ----------
    app : ASGI app
        The FastAPI app inside.
    config : ServiceConfig
    metrics : ServiceMetrics
    admission : Admission
    """

    def __init__(
        self, app: Any, config: ServiceConfig, metrics: ServiceMetrics, admission: Admission
    ) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.admission = admission
        self.expected = f"Bearer {config.token}".encode() if config.token is not None else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = _Exchange(scope, send)
        try:
            await self._handle(scope, receive, ex)
        finally:
            self._finish(scope, ex)

    async def _handle(self, scope: dict, receive: Any, ex: _Exchange) -> None:
        path = scope.get("path", "")
        if self.expected is not None and (
            (path.startswith("/v1/") and path != "/v1/i18n") or path == "/metrics"
        ):
            if not hmac.compare_digest(_header(scope, b"authorization"), self.expected):
                await error_response(
                    401,
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                    {"WWW-Authenticate": 'Bearer realm="gaikan"'},
                )(scope, receive, ex.send)
                return
        upload = scope.get("method") == "POST" and path == "/v1/inspect"
        if upload:
            try:
                self.admission.enter(ex.client)
            except ApiError as exc:
                # the body is left unread: close the connection after the answer
                headers = {**exc.headers, "Connection": "close"}
                await error_response(exc.status, exc.message, headers)(scope, receive, ex.send)
                return
        try:
            await self._call_app(scope, _deadline_receive(receive, self.config.read_timeout_s), ex)
        finally:
            if upload:
                self.admission.leave(ex.client)

    async def _call_app(self, scope: dict, receive: Any, ex: _Exchange) -> None:
        try:
            await self.app(scope, receive, ex.send)
        except Exception as exc:
            # The catch-all: answered here (not by Starlette's
            # ServerErrorMiddleware, which re-raises and makes the server
            # drop the keep-alive connection).  Only a bug gets here.
            if ex.started:
                raise
            log.error(
                "internal error on %s %s",
                scope.get("method"),
                scope.get("path"),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            self.metrics.add(internal_errors=1)
            await error_response(500, "internal server error (logged on the server)")(
                scope, receive, ex.send
            )

    def _finish(self, scope: dict, ex: _Exchange) -> None:
        seconds = time.perf_counter() - ex.t0
        path = scope.get("path", "")
        self.metrics.observe_request(scope.get("method", ""), route_label(path), ex.status, seconds)
        fields: dict[str, Any] = {
            "request_id": ex.request_id,
            "client": ex.client,
            "method": scope.get("method", ""),
            "path": path[:200],
            "status": ex.status,
            "latency_ms": round(seconds * 1000.0, 3),
        }
        verdicts = scope.get("state", {}).get("verdicts")
        if verdicts is not None:
            fields["verdicts"] = verdicts
        event("request", **fields)
