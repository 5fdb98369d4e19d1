"""Kept images and overlays, content-addressed, in one SQLite file: ``blobs/pictures.sqlite3``.

The key of a picture is the SHA-256 of its bytes, so the same picture
stored twice takes the space once.  The pictures of one batch of records
are committed in one transaction (WAL, ``synchronous=FULL``) *before* the
records that name them, so a committed record never points at a picture
that a crash lost, and a crash leaves at most pictures that no record
names (the retention limits remove them like any other).  A picture's
``stored`` time is its age for the retention policy (storing it again
refreshes it).

Why one file and not one file per picture: a file per picture cost ~1 ms
of CPU each on a small station (create, write, fsync, rename), as much as
a third of the scoring of a 100×100 image, and a year of kept defects is
millions of files to walk for every retention pass.  Here a batch costs one
fsync however many pictures it holds (0.08–0.24 ms of CPU per picture
measured), retention is an indexed query, and the pictures stay next to the
database in a single file that any SQLite tool opens (see
``docs/decisions.md``, "kept pictures in one file").
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .schema import RecordsError

__all__ = ["FILE_NAME", "BlobStore", "sha256"]

#: The picture store's file inside the store's folder.
FILE_NAME = "pictures.sqlite3"
#: ``PRAGMA user_version`` of the file this code writes.
SCHEMA_VERSION = 1
_HEX = frozenset("0123456789abcdef")


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``: the key of a picture and the digest of an image."""
    return hashlib.sha256(data).hexdigest()


def _retry_busy(setup: Callable[[], None], timeout_s: float = 30.0) -> None:
    """Run ``setup``, again while another process holds the lock it needs.

    Switching a new file to WAL takes an exclusive lock and SQLite answers
    "database is locked" at once there, without waiting out the busy timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            setup()
            return
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check_key(key: str) -> str:
    if len(key) != 64 or not _HEX.issuperset(key):
        raise ValueError(f"not a picture key: {key!r}")
    return key


class BlobStore:
    """Content-addressed pictures in one SQLite file (created on first write).

    Parameters
    ----------
    root : path-like
        The folder holding :data:`FILE_NAME` (``blobs/`` next to the
        records database by default).

    Notes
    -----
    Safe to share between threads (one connection per thread) and between
    processes (SQLite WAL, 30 s busy timeout).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.file = self.root / FILE_NAME
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------
    def _conn(self, create: bool) -> sqlite3.Connection | None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if not create and not self.file.exists():
            return None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.file, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise RecordsError(f"cannot open the picture store {self.file}: {exc}") from None
        try:
            with self._lock:  # this process's threads set the file up one at a time
                _retry_busy(lambda: self._setup(conn))
        except sqlite3.Error as exc:
            conn.close()
            raise RecordsError(
                f"cannot use the picture store {self.file}: {exc} (move the file aside to "
                "start a new one; the records keep their rows and say their pictures are gone)"
            ) from None
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RecordsError(
                f"the picture store {self.file} was written by a newer gaikan (version "
                f"{version}, this one reads {SCHEMA_VERSION}); upgrade gaikan"
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # the small columns first: reading them never walks a picture's overflow pages
            conn.execute(
                "CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, stored REAL NOT NULL, "
                "size INTEGER NOT NULL, data BLOB NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS blobs_age ON blobs (stored, size, key)")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _write(self, sql: str, rows: list[tuple]) -> sqlite3.Connection:
        """Run ``sql`` over ``rows`` in one transaction; the connection it used."""
        conn = self._conn(create=True)
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RecordsError(f"cannot write to the picture store {self.file}: {exc}") from None
        return conn

    def close(self) -> None:
        """Close every thread's connection (a later call opens new ones)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # -- pictures ------------------------------------------------------------
    def put_many(self, datas: Iterable[bytes], now: float | None = None) -> list[str]:
        """Store pictures in one transaction (one fsync); their keys, in order.

        ``now`` is the storage time (default: the clock), the age retention reads.
        """
        datas = list(datas)
        keys = [sha256(d) for d in datas]
        if datas:
            when = time.time() if now is None else float(now)
            unique = dict(zip(keys, datas))
            self._write(
                "INSERT INTO blobs (key, stored, size, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET stored = excluded.stored",
                [(k, when, len(d), d) for k, d in unique.items()],
            )
        return keys

    def put(self, data: bytes) -> str:
        """Store one picture; return its key."""
        return self.put_many([data])[0]

    def get(self, key: str) -> bytes | None:
        """The picture's bytes, or None when it is not (or no longer) stored."""
        conn = self._conn(create=False)
        if conn is None:
            return None
        row = conn.execute("SELECT data FROM blobs WHERE key = ?", (_check_key(key),)).fetchone()
        return None if row is None else bytes(row[0])

    def exists(self, key: str) -> bool:
        """Whether the picture ``key`` is stored."""
        conn = self._conn(create=False)
        sql = "SELECT 1 FROM blobs WHERE key = ?"
        return conn is not None and conn.execute(sql, (_check_key(key),)).fetchone() is not None

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove pictures (no error for those already gone) and give the space back."""
        rows = [(_check_key(k),) for k in keys]
        if not rows or self._conn(create=False) is None:
            return
        conn = self._write("DELETE FROM blobs WHERE key = ?", rows)
        # free pages back to the file system; executescript steps the pragma to its end
        # (execute() runs one step: one page)
        conn.executescript("PRAGMA incremental_vacuum;")

    def delete(self, key: str) -> None:
        """Remove one picture (no error when it is already gone)."""
        self.delete_many([key])

    def set_stored(self, key: str, when: float) -> None:
        """Set a picture's storage time (its age for retention): imports and tests."""
        self._write("UPDATE blobs SET stored = ? WHERE key = ?", [(float(when), _check_key(key))])

    def entries(self) -> Iterator[tuple[str, float, int]]:
        """Every stored picture as ``(key, stored time, size)``, oldest first."""
        conn = self._conn(create=False)
        if conn is None:
            return
        sql = "SELECT key, stored, size FROM blobs ORDER BY stored, key"
        yield from conn.execute(sql).fetchall()

    def select_expired(
        self, *, max_age_s: float | None, max_bytes: int | None, now: float | None = None
    ) -> list[str]:
        """Keys to delete: older than ``max_age_s``, then the oldest until ``max_bytes`` fit.

        Two queries on the ``(stored, size, key)`` index, never the pictures:
        a picture goes for size when it and every newer picture that age
        leaves hold more than ``max_bytes`` together.
        """
        conn = self._conn(create=False)
        if conn is None:
            return []
        now = time.time() if now is None else now
        old = "? - stored > ?" if max_age_s is not None else "0"
        age = (now, max_age_s) if max_age_s is not None else ()
        doomed = [
            k
            for (k,) in conn.execute(f"SELECT key FROM blobs WHERE {old} ORDER BY stored, key", age)
        ]
        if max_bytes is not None:
            newer_first = (
                "SELECT key, stored, SUM(size) OVER (ORDER BY stored DESC, key DESC) AS held "
                f"FROM blobs WHERE NOT ({old})"
            )
            sql = f"SELECT key FROM ({newer_first}) WHERE held > ? ORDER BY stored, key"
            doomed += [k for (k,) in conn.execute(sql, (*age, int(max_bytes)))]
        return doomed
