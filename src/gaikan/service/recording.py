"""The station's memory: each answered inspection committed to a :class:`~gaikan.records.RecordStore`.

:meth:`Recorder.record` runs in the scoring thread, after the verdicts and
overlays are made and **before** the HTTP answer is built: it returns only
once the rows are committed (one transaction per request), so a client
never receives a verdict that is not in the database.  When the commit
fails the request is answered 503 (nothing recorded, no verdict given).

Nothing here imports a web framework; :mod:`gaikan.records` (SQLAlchemy)
is imported only when a recorder is built.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recorder", "Upload", "identity", "open_recorder"]

log = logging.getLogger("gaikan.service")


def identity(host: str | None, token_set: bool) -> str:
    """Who made a request, as recorded: ``token@HOST`` when the bearer token was checked.

    The station has one shared token, so its identity is the token plus the
    client address; without a token only the address is known.
    """
    host = host or "unknown"
    return f"token@{host}" if token_set else host


@dataclass
class Upload:
    """One answered file of a request, as it goes to the database.

    Attributes
    ----------
    inspection : gaikan.inspection.Inspection
        The verdict (an error result when the file could not be inspected).
    data : bytes
        The uploaded file's bytes (their SHA-256 is the record's digest).
    overlay_png : bytes or None
        The overlay picture, when one was rendered.
    latency_ms : float
        Time from the request's body being read to this verdict.
    """

    inspection: Any
    data: bytes
    overlay_png: bytes | None
    latency_ms: float


class Recorder:
    """Commits a request's results to the store, with the served model's version.

    Parameters
    ----------
    store : gaikan.records.RecordStore
    station : str
        The station name written on every record.
    model_id : str or None
        The served model's id (None: not registered, e.g. an in-memory model).
    model_version : int or None
        Its version in the store.
    """

    def __init__(
        self, store: Any, station: str, model_id: str | None, model_version: int | None
    ) -> None:
        self.store = store
        self.station = station
        self.model_id = model_id
        self.model_version = model_version
        self._blob_lock = threading.Lock()

    def keeps(self, verdict: str) -> bool:
        """Whether the retention policy keeps this verdict's image (render its overlay then)."""
        return bool(self.store.retention.keeps(verdict))

    def record(self, uploads: list[Upload], client: str | None) -> list[int]:
        """Commit every upload of one request in one transaction; their record ids, in order.

        Raises
        ------
        gaikan.records.RecordsError or sqlalchemy.exc.SQLAlchemyError
            The commit failed: nothing of this request is recorded.

        Notes
        -----
        The kept images and overlays are written first, one thread at a
        time: ``BlobStore.put`` names its temporary file by process id only,
        so two scoring threads storing the same new content at once would
        collide.  ``add_many`` then finds them on disk.  The commits
        themselves run concurrently.
        """
        with self._blob_lock:
            for u in uploads:
                if self.keeps(u.inspection.verdict):
                    for blob in (u.data, u.overlay_png):
                        if blob:
                            self.store.blobs.put(blob)
        entries = [
            (
                u.inspection,
                dict(
                    source=u.inspection.file,
                    station=self.station,
                    client=client,
                    image_bytes=u.data,
                    overlay_png=u.overlay_png,
                    model_id=self.model_id,
                    model_version=self.model_version,
                    latency_ms=round(u.latency_ms, 3),
                ),
            )
            for u in uploads
        ]
        return list(self.store.add_many(entries))

    def active_model(self) -> dict[str, Any] | None:
        """The active version of the served model id (None when not registered)."""
        if self.model_id is None:
            return None
        mv = self.store.active_model(self.model_id)
        return None if mv is None else mv.to_json()

    def close(self) -> None:
        self.store.close()


def open_recorder(
    db: str | os.PathLike | None,
    *,
    keep: str = "ng",
    keep_days: float | None = None,
    keep_size: int | None = None,
    station: str | None = None,
    model_path: str | os.PathLike | None = None,
    model_id: str | None = None,
    threshold: float | None = None,
) -> Recorder:
    """Open (and migrate) the store and register the served model file.

    Parameters
    ----------
    db : str, path-like or None
        Database URL or SQLite path (None: the records' default database).
    keep : {"ng", "all", "none"}
        Which images and overlays are kept next to the database.
    keep_days, keep_size
        Age (days) and size (bytes) limits on the kept images.
    station : str, optional
        Station name (default: the host name).
    model_path : path-like, optional
        The served model file: registered with :meth:`RecordStore.use_model`
        (same file, same version; activated when nothing is active yet).
    model_id : str, optional
        The model's id (default: the model file's stem; ``"in-memory"``
        without a file).
    threshold : float, optional
        Recorded with the model version.

    Raises
    ------
    gaikan.errors.ParameterError
        A bad retention option.
    gaikan.records.RecordsError
        The database cannot be opened or migrated.
    """
    import socket

    from ..records import RecordStore, Retention

    retention = Retention(keep, max_age_days=keep_days, max_bytes=keep_size)
    store = RecordStore(db, retention=retention)
    try:
        version = None
        if model_path is not None:
            mid = model_id or Path(model_path).stem
            version = store.use_model(mid, model_path, threshold=threshold).version
        else:
            mid = model_id or "in-memory"
        return Recorder(store, station or socket.gethostname(), mid, version)
    except Exception:
        store.close()
        raise
