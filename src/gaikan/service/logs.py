"""Structured logs: one JSON object per line on stderr.

Events carry their fields in ``extra={"fields": {...}}``; every other
record (uvicorn's, a traceback) is rendered as JSON too, with its message.
:func:`configure_logging` is what ``gaikan serve --log-level`` calls; an
app built with :func:`gaikan.service.create_app` inside another program
logs through the standard ``logging`` tree and leaves handlers to it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..errors import ParameterError

__all__ = ["JsonFormatter", "configure_logging", "event"]

log = logging.getLogger("gaikan.service")

#: Loggers that ``configure_logging`` sends to stderr as JSON.
_LOGGERS = ("gaikan", "uvicorn")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: ts, level, logger, event/message, fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out["event"] = record.getMessage()
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "info") -> None:
    """Send the ``gaikan`` and ``uvicorn`` loggers to stderr as JSON lines at ``level``.

    Parameters
    ----------
    level : {"critical", "error", "warning", "info", "debug"}
        Lowest level logged; "warning" drops the per-request lines.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ParameterError(f"unknown log level {level!r}")
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(h)
        handler = _StderrHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(numeric)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event ``name`` with ``fields`` on the ``gaikan.service`` logger."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields})
