"""Committing inspections from a child process: :class:`WriterProcess`.

The station answers a request only once its rows are committed.  Done in
the server's own process, every commit (SQLAlchemy, the driver, several
re-takes of the interpreter lock around each database call) competes with
the scoring threads and the event loop for the one interpreter lock: on a
2-core box recording cost the station a third of its throughput although
the database itself was idle.  :class:`WriterProcess` runs
:meth:`RecordStore.add_many` in a spawned child instead; the server only
pickles each batch onto a pipe and waits for the ids (one lock re-take per
batch).  See ``docs/decisions.md`` (recording off the server's interpreter).

Guarantees are those of :meth:`RecordStore.add_many`: ids come back only
after the commit.  When the child dies its batch raises
:class:`~gaikan.records.RecordsError` (nothing answered as recorded) and the
next batch starts a new child.  When the server dies the child reads the
end of the pipe and exits after the commit it is in.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import threading
from collections.abc import Iterable
from typing import Any

from .retention import Retention
from .schema import RecordsError

__all__ = ["WriterProcess"]

#: Seconds a new child may take to import, open and migrate the database.
START_TIMEOUT_S = 120.0


class WriterProcess:
    """:meth:`RecordStore.add_many` run in a child process; same call, same result.

    Parameters
    ----------
    url : str
        The database URL (as :attr:`RecordStore.url`).
    blob_dir : path-like
        The store's image folder.
    retention : Retention
        The store's retention policy (the child prunes as records are added).

    Notes
    -----
    One caller at a time (the station's recorder thread); calls are
    serialised by a lock.  The child is started at once, in the background;
    the first :meth:`add_many` waits for it to be ready.
    """

    def __init__(self, url: str, blob_dir: str | os.PathLike, retention: Retention) -> None:
        self.url = url
        self.blob_dir = os.fspath(blob_dir)
        self.retention = retention
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False
        self.starts = 0  # children started (for tests)
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a threaded server
        parent, child = ctx.Pipe()
        args = (child, self.url, self.blob_dir, dataclasses.asdict(self.retention))
        proc = ctx.Process(target=_serve, args=args, name="gaikan-records-writer", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._ready = proc, parent, False
        self.starts += 1

    def _wait_ready(self) -> None:
        if not self._conn.poll(START_TIMEOUT_S):
            raise RecordsError(f"the records writer did not start within {START_TIMEOUT_S:.0f} s")
        ok, value = self._conn.recv()
        if not ok:
            raise RecordsError(f"the records writer cannot open the database: {value}")
        self._ready = True

    def add_many(self, entries: Iterable[tuple[Any, dict[str, Any]]]) -> list[int]:
        """As :meth:`RecordStore.add_many`, committed by the child.

        Raises
        ------
        RecordsError
            The commit failed or the child died (nothing of this batch is
            answered as recorded; a new child takes the next batch).
        """
        # the display picture is not recorded and need not cross the pipe
        batch = [(dataclasses.replace(ins, display=None), kw) for ins, kw in entries]
        with self._lock:
            try:
                if self._proc is None or not self._proc.is_alive():
                    self._restart()
                if not self._ready:
                    self._wait_ready()
                self._conn.send(batch)
                ok, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._discard()
                raise RecordsError(
                    f"the records writer stopped: {exc or type(exc).__name__}"
                ) from None
        if not ok:
            raise RecordsError(value)
        return list(value)

    def _restart(self) -> None:
        self._discard()
        self._start()

    def _discard(self) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def close(self) -> None:
        """Let the child finish and exit."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
            if self._proc is not None:
                self._proc.join(30)
            self._discard()


def _serve(conn: Any, url: str, blob_dir: str, retention: dict[str, Any]) -> None:
    """The child: open the store, then commit each batch and send back its ids."""
    from .store import RecordStore

    try:
        store = RecordStore(url, blob_dir=blob_dir, retention=Retention(**retention))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the server must hear it
        conn.send((False, str(exc)))
        return
    conn.send((True, None))
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:  # the server is gone
                return
            if batch is None:
                return
            try:
                conn.send((True, store.add_many(batch)))
            except Exception as exc:  # noqa: BLE001 - the batch fails, the child goes on
                conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        store.close()
