"""Request bodies: reading with a size cap, multipart parsing in memory, file labels.

Nothing from a request is ever written to disk, and client filenames are
only display labels, never paths.  The read *deadline* is enforced one
layer out, by :mod:`.edge`, on every body a route reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect

from .errors import ApiError

__all__ = ["Part", "file_label", "parse_multipart", "read_body"]

#: Hard cap on bytes drained from an oversized body before answering 413.
_DRAIN_FACTOR = 8


def _too_big(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the upload exceeds the server limit of {limit} bytes "
        f"({limit / 2**20:.1f} MiB); send fewer or smaller files",
    )


async def read_body(chunks: AsyncIterator[bytes], headers: Mapping[str, str], limit: int) -> bytes:
    """Read a request body of at most ``limit`` bytes.

    An oversized body is drained (up to ``8 · limit + 1 MiB``) before
    answering so that clients which send the whole body first still read a
    clean 413.

    Parameters
    ----------
    chunks : async iterator of bytes
        The body (``Request.stream()``).
    headers : mapping
        The request headers (``content-length`` is checked first).
    limit : int
        Most bytes accepted.

    Returns
    -------
    bytes
        The body, at most ``limit`` bytes.

    Raises
    ------
    ApiError
        413 beyond ``limit``; 400 for a bad Content-Length or a client that
        went away mid-body.
    """
    hard = _DRAIN_FACTOR * limit + (1 << 20)
    declared = headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > hard:
            raise _too_big(limit)
    kept, total = [], 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total <= limit:
                kept.append(chunk)
            elif total > hard:
                raise _too_big(limit)
    except ClientDisconnect:
        raise ApiError(400, "the client went away before the upload was complete") from None
    if total > limit:
        raise _too_big(limit)
    return b"".join(kept)


@dataclass
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


class _Collector:
    """python-multipart callbacks that gather parts (at most ``max_parts``) in memory."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.raw: list[tuple[dict[bytes, bytes], bytearray]] = []
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.hfield, self.hvalue = bytearray(), bytearray()
        self.done = False

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self.hfield.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.hvalue.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_part_data": lambda d, s, e: self.data.extend(d[s:e]),
            "on_part_end": lambda: self.raw.append((self.headers, self.data)),
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        if len(self.raw) >= self.max_parts:
            raise ApiError(413, f"too many parts in one request (at most {self.max_parts} files)")
        self.headers, self.data = {}, bytearray()

    def on_header_end(self) -> None:
        self.headers[bytes(self.hfield).strip().lower()] = bytes(self.hvalue).strip()
        self.hfield.clear()
        self.hvalue.clear()

    def on_end(self) -> None:
        self.done = True


def parse_multipart(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Split a multipart/form-data body into parts.

    Parameters
    ----------
    body : bytes
        The whole request body.
    content_type : str
        The request's Content-Type header (with its boundary).
    max_parts : int
        Most parts accepted.

    Returns
    -------
    list of Part
        In body order.

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
    collector = _Collector(max_parts)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    if not collector.done:
        raise ApiError(
            400, "malformed multipart body: it ends before the closing boundary (truncated upload?)"
        )
    return [_part(headers, data, parse_options_header) for headers, data in collector.raw]


def _part(headers: dict[bytes, bytes], data: bytearray, parse_options_header: Any) -> Part:
    disp, opts = parse_options_header(headers.get(b"content-disposition", b"").decode("latin-1"))
    if disp != b"form-data":
        raise ApiError(
            400, "malformed multipart body: a part lacks 'Content-Disposition: form-data'"
        )
    name = _text(opts.get(b"name", b""))
    filename = _text(opts[b"filename"]) if b"filename" in opts else None
    ptype = headers.get(b"content-type", b"").decode("latin-1")
    return Part(name, filename, ptype, bytes(data))


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
