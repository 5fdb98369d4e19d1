"""The station's limits and knobs: :class:`ServiceConfig` and its defaults.

No web framework is imported here, so the configuration can be built and
checked (``gaikan serve``'s start-up, tests) without fastapi.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import ParameterError

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOADS_PER_CLIENT",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_READ_TIMEOUT_S",
    "ServiceConfig",
    "check_lang",
    "default_workers",
    "make_config",
]

#: Default cap on one request body (all files together).
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Default cap on the pixels of one decoded image (before resizing).
DEFAULT_MAX_PIXELS = 25_000_000
#: Default cap on files per request.
DEFAULT_MAX_FILES = 64
#: Default deadline for a request body to arrive completely, seconds (408 beyond it).
DEFAULT_READ_TIMEOUT_S = 15.0
#: Default cap on the inspect requests one client address has in flight (429 beyond it).
DEFAULT_MAX_UPLOADS_PER_CLIENT = 4


@dataclass
class ServiceConfig:
    """Limits and knobs of one service instance.

    Attributes
    ----------
    max_upload_bytes : int
        Cap on one request body, all files together (413 beyond it).
    max_pixels : int
        Cap on the pixels of one decoded image (per-file error beyond it).
    max_files : int
        Cap on files per request (413 beyond it).
    workers : int
        Scoring threads.
    max_inflight : int
        Inspect requests accepted at once (503 beyond it).
    read_timeout_s : float
        Seconds a request body may take to arrive, counted from the request
        line; a body still incomplete then gets 408 and the connection is
        closed.
    max_uploads_per_client : int
        Inspect requests one client address may have in flight (429 beyond it).
    overlay_entries, overlay_bytes, overlay_ttl_s
        Bounds of the in-memory overlay LRU.
    token : str or None
        Shared bearer token (None: no auth).
    lang : {"en", "ja"} or None
        The pages' language (``gaikan serve --lang``); None: each browser's
        Accept-Language decides.  A page's ``?lang=`` overrides it.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = DEFAULT_MAX_FILES
    workers: int = 1
    max_inflight: int = 64
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    max_uploads_per_client: int = DEFAULT_MAX_UPLOADS_PER_CLIENT
    overlay_entries: int = 512
    overlay_bytes: int = 64 * 1024 * 1024
    overlay_ttl_s: float = 3600.0
    token: str | None = field(default=None, repr=False)
    lang: str | None = None

    def limits(self) -> dict[str, float | int]:
        """The request limits, as reported in the start-up log line."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels,
            "max_files": self.max_files,
            "max_inflight": self.max_inflight,
            "max_uploads_per_client": self.max_uploads_per_client,
            "read_timeout_s": self.read_timeout_s,
        }


def default_workers() -> int:
    """The CPUs this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_lang(lang: str | None) -> str | None:
    """``"ja"``/``"en"`` (any case or region, e.g. ``"ja-JP"``) or None; else ParameterError."""
    if lang is None:
        return None
    from ..i18n import LANGS, normalize_lang

    norm = normalize_lang(lang)
    if norm is None:
        raise ParameterError(f"lang {lang!r} is not available: use one of {', '.join(LANGS)}")
    return norm


def _check_token(token: str | None) -> str | None:
    if token is None:
        return None
    text = str(token)
    if not (text and text.isascii() and text.isprintable() and text.strip() == text):
        raise ParameterError(
            "the token must be non-empty printable ASCII without surrounding spaces "
            "(it travels in an HTTP header)"
        )
    return text


def make_config(
    *,
    token: str | None,
    max_upload_bytes: int,
    max_pixels: int,
    workers: int | None,
    max_files: int,
    max_inflight: int | None,
    read_timeout_s: float,
    max_uploads_per_client: int,
    overlay_entries: int,
    overlay_bytes: int,
    overlay_ttl_s: float,
    lang: str | None = None,
) -> ServiceConfig:
    """Check :func:`gaikan.service.create_app`'s keyword arguments; a :class:`ServiceConfig`.

    Raises
    ------
    ParameterError
        A token that cannot travel in a header, a limit that is not positive,
        or a language gaikan does not have.
    """
    token = _check_token(token)
    if max_upload_bytes <= 0 or max_pixels <= 0 or max_files <= 0:
        raise ParameterError("max_upload_bytes, max_pixels and max_files must be positive")
    nworkers = int(workers) if workers else default_workers()
    if nworkers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}")
    if not read_timeout_s > 0:
        raise ParameterError(f"read_timeout_s must be > 0 seconds, got {read_timeout_s}")
    if int(max_uploads_per_client) < 1:
        raise ParameterError(f"max_uploads_per_client must be >= 1, got {max_uploads_per_client}")
    return ServiceConfig(
        max_upload_bytes=int(max_upload_bytes),
        max_pixels=int(max_pixels),
        max_files=int(max_files),
        workers=nworkers,
        max_inflight=int(max_inflight) if max_inflight else max(64, 8 * nworkers),
        read_timeout_s=float(read_timeout_s),
        max_uploads_per_client=int(max_uploads_per_client),
        overlay_entries=overlay_entries,
        overlay_bytes=overlay_bytes,
        overlay_ttl_s=overlay_ttl_s,
        token=token,
        lang=check_lang(lang),
    )
