"""The station's memory: each answered inspection committed to a :class:`~gaikan.records.RecordStore`.

:meth:`Recorder.submit` is called after the verdicts and overlays are made
and **before** the HTTP answer is sent: the route awaits its future, which
resolves only once the rows are committed, so a client never receives a
verdict that is not in the database.  One writer thread takes whatever
requests are waiting and has them committed in one transaction (group
commit), by default by a child process
(:class:`~gaikan.records.writer.WriterProcess`) so that the database work
does not take the server's interpreter lock from the scoring threads.  When
the commit fails the request is answered 503 (nothing recorded, no verdict
given).

Nothing here imports a web framework; :mod:`gaikan.records` (SQLAlchemy)
is imported only when a recorder is built.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recorder", "RecordingFailed", "Upload", "identity", "open_recorder"]

log = logging.getLogger("gaikan.service")

#: Longest wait (s) of a commit for more requests, and the request rate under which it
#: never waits (one per LINGER_S).  See :meth:`Recorder._gather`.
LINGER_S = 0.010


class RecordingFailed(RuntimeError):
    """A request's results could not be committed (nothing of its batch is recorded)."""


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


#: One request queued for the writer thread: its uploads, client and future.
_Item = tuple[list[Upload], "str | None", Future]


class Recorder:
    """Commits requests' results to the store (group commit), with the served model's version.

    One writer thread takes every request waiting to be recorded and has
    their kept images and overlays and then their rows committed together
    (one transaction each, one fsync each, however many requests share
    them), by :meth:`RecordStore.add_many
    <gaikan.records.RecordStore.add_many>` in a child process or here:
    under load many requests share a commit, so recording costs little
    throughput, and the scoring threads never wait on the disk.  Each
    request's future resolves only once its rows are committed.

    Parameters
    ----------
    store : gaikan.records.RecordStore
    station : str
        The station name written on every record.
    model_id : str or None
        The served model's id (None: not registered, e.g. an in-memory model).
    model_version : int or None
        Its version in the store.
    max_batch : int
        Most requests committed in one transaction.
    writer : {"process", "thread"}
        Where the rows are committed: ``"process"`` (default) in a child
        process (:class:`~gaikan.records.writer.WriterProcess`), so the
        database work does not compete with scoring for the interpreter
        lock; ``"thread"`` in this process (tests, tools).
    share : Recorder, optional
        Another version's recorder of the same station: its store and
        writer are used (not started again, and closed by it).
    """

    def __init__(
        self,
        store: Any,
        station: str,
        model_id: str | None,
        model_version: int | None,
        max_batch: int = 256,
        writer: str = "process",
        share: Recorder | None = None,
    ) -> None:
        if writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', got {writer!r}")
        self.store = store
        self.station = station
        self.model_id = model_id
        self.model_version = model_version
        self.max_batch = max_batch
        self.writer = writer
        self._owner = share is None
        self.sink: Any = store  # what commits: the store itself or the writer process
        if share is not None:
            self.sink = share.sink
        elif writer == "process":
            from ..records.writer import WriterProcess

            self.sink = WriterProcess(store.url, store.blobs.root, store.retention)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._gap = 1.0  # seconds between requests (moving mean)
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.commits = 0  # transactions committed (for tests and benchmarks)

    def for_version(self, version: int | None) -> Recorder:
        """A recorder of another version of the served model, sharing this one's writer."""
        return Recorder(
            self.store,
            self.station,
            self.model_id,
            version,
            max_batch=self.max_batch,
            writer=self.writer,
            share=self,
        )

    def keeps(self, verdict: str) -> bool:
        """Whether the retention policy keeps this verdict's image (render its overlay then)."""
        return bool(self.store.retention.keeps(verdict))

    def submit(self, uploads: list[Upload], client: str | None) -> Future:
        """Queue one request's uploads; a future of their record ids (in order) once committed.

        The future raises :class:`RecordingFailed` when the commit fails
        (nothing of that batch is recorded then; the cause is logged).
        """
        fut: Future = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gaikan-recorder", daemon=True
                )
                self._thread.start()
        now = time.monotonic()
        # moving mean of the gaps between requests (what the writer thread lingers by)
        self._gap += 0.2 * (min(now - self._last, 1.0) - self._gap)
        self._last = now
        self._queue.put((uploads, client, fut))
        return fut

    def record(self, uploads: list[Upload], client: str | None) -> list[int]:
        """Commit one request's uploads and wait; their record ids, in order.

        Raises
        ------
        RecordingFailed
            The commit failed: nothing of this request is recorded.
        """
        return list(self.submit(uploads, client).result())

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, stop = self._gather(item)
            self._commit(batch)
            if stop:
                return

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """``first`` and what else arrives for the same commit; True when told to stop.

        Takes what is queued, then, while requests arrive faster than
        :data:`LINGER_S` apart, waits up to ``min(LINGER_S, 3 gaps)`` for more:
        each commit costs the writer about as much as six rows, so under load a few
        milliseconds of waiting buy batches of several requests, and a
        station at a calm pace never waits.
        """
        batch = [first]
        now = time.monotonic()
        gap = self._gap
        deadline = now + min(LINGER_S, 3.0 * gap) if gap < LINGER_S else now
        while len(batch) < self.max_batch:
            wait = deadline - time.monotonic()
            try:
                more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
        return batch, False

    def _commit(self, batch: list[_Item]) -> None:
        live = [(u, c, f) for u, c, f in batch if f.set_running_or_notify_cancel()]
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
            for uploads, client, _ in live
            for u in uploads
        ]
        try:
            ids = list(self.sink.add_many(entries))
        except Exception as exc:  # every waiting request learns it was not recorded
            log.exception("recording %d result(s) failed", len(entries))
            for _, _, fut in live:
                fut.set_exception(RecordingFailed(f"the commit failed: {exc}"))
            return
        self.commits += 1
        at = 0
        for uploads, _, fut in live:
            fut.set_result(ids[at : at + len(uploads)])
            at += len(uploads)

    def active_model(self) -> dict[str, Any] | None:
        """The active version of the served model id (None when not registered)."""
        if self.model_id is None:
            return None
        mv = self.store.active_model(self.model_id)
        return None if mv is None else mv.to_json()

    def close(self) -> None:
        """Commit what is queued, stop the writer and release the database.

        A recorder made by :meth:`for_version` only stops its own thread.
        """
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(30)
        if not self._owner:
            return
        if self.sink is not self.store:
            self.sink.close()
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
