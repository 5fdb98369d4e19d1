"""The inspection station: a web app and REST API around one fitted model.

Needs the ``serve`` extra (fastapi, uvicorn, python-multipart,
prometheus_client); nothing here is imported by ``import gaikan``.  Start
it with ``gaikan serve`` or build the ASGI app yourself::

    from gaikan.service import create_app
    app = create_app("part.gaikan", token="s3cret")
"""

from __future__ import annotations

from typing import Any

from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the FastAPI app; see :func:`gaikan.service.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
