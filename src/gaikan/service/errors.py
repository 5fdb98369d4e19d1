"""Client errors of the station and their JSON bodies.

Every user error is a 4xx JSON body ``{"error": ..., "status": ...}``; only
a bug in gaikan reaches the catch-all in :mod:`.edge`, which answers a bare
JSON 500.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_response", "install_error_handlers"]


class ApiError(Exception):
    """A client error answered with a JSON body and a 4xx status.

    Parameters
    ----------
    status : int
        The HTTP status.
    message : str
        What went wrong and how to fix it (the body's ``error``).
    headers : dict, optional
        Extra response headers (``Retry-After``, ``Connection: close``, ...).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    """The JSON error body ``{"error": message, "status": status}``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer ApiError, Starlette's HTTP errors and validation errors as JSON, never a trace."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Any:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        msg = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            msg = f"no such endpoint or resource: {request.url.path}"
        elif exc.status_code == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, msg, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Any:
        return error_response(422, f"invalid request: {exc.errors()[:3]}")
