"""Overlay PNGs in a bounded, expiring, in-memory LRU behind unguessable keys."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

__all__ = ["OverlayStore"]


class OverlayStore:
    """LRU of overlay PNGs bounded by entries, total bytes and age.

    Parameters
    ----------
    max_entries : int
        Most PNGs held (0 disables the store).
    max_bytes : int
        Most bytes held, all PNGs together.
    ttl_s : float
        Age in seconds after which a PNG is dropped.
    """

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
        """The PNG stored under ``key``, or None when it expired, was evicted or never was."""
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
