"""Images and overlays on disk, content-addressed: ``blobs/ab/abcdef….bin``.

The key of a blob is the SHA-256 of its bytes, so the same picture stored
twice takes the space once.  A blob is written to a temporary file, flushed
to disk and renamed into place, so a reader never sees half a blob and a
crash leaves at most an unreferenced temporary file.  A blob's
modification time is its age for the retention policy (storing it again
refreshes it).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BlobStore", "sha256"]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the key of a blob and the digest of an image."""
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """A folder of content-addressed files.

    Parameters
    ----------
    root : path-like
        The folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the blob ``key`` lives (whether or not it exists)."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / f"{key}.bin"

    def put(self, data: bytes) -> str:
        """Store ``data``; return its key."""
        key = sha256(data)
        dest = self.path(key)
        if dest.exists():
            os.utime(dest)
            return key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")  # per thread
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        return key

    def get(self, key: str) -> bytes | None:
        """The blob's bytes, or None when it is not (or no longer) stored."""
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Remove a blob (no error when it is already gone)."""
        self.path(key).unlink(missing_ok=True)

    def entries(self) -> Iterator[tuple[str, float, int]]:
        """Every stored blob as ``(key, mtime, size)``."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.glob("*.bin"):
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                yield f.stem, st.st_mtime, st.st_size

    def select_expired(
        self, *, max_age_s: float | None, max_bytes: int | None, now: float | None = None
    ) -> list[str]:
        """Keys to delete: older than ``max_age_s``, then the oldest until ``max_bytes`` fit."""
        now = time.time() if now is None else now
        entries = sorted(self.entries(), key=lambda e: e[1])
        doomed = [k for k, mtime, _ in entries if max_age_s is not None and now - mtime > max_age_s]
        if max_bytes is not None:
            gone = set(doomed)
            kept = [e for e in entries if e[0] not in gone]
            total = sum(size for _, _, size in kept)
            for key, _, size in kept:
                if total <= max_bytes:
                    break
                doomed.append(key)
                total -= size
        return doomed
