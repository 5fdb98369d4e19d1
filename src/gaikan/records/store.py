"""The station's memory: :class:`RecordStore`, one database plus a folder of images.

Every inspection the station makes is added here *before* its verdict is
reported, moved or published: :meth:`RecordStore.add` returns only once the
row is committed (and the image and overlay it refers to are on disk).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from . import versions
from .blobs import BlobStore, sha256
from .models import InspectionRow, ReviewRow
from .query import Filters
from .record import ModelVersion, Record, Review
from .retention import Retention
from .schema import RecordsError, data_dir, make_engine, resolve_url, sqlite_path, upgrade
from .stats import Bucket, stats

__all__ = ["RecordNotFound", "RecordStore", "blob_dir_for"]

#: Retention runs at most this often (seconds) as records are added.
PRUNE_EVERY_S = 60.0
#: What :meth:`RecordStore.add` copies onto the row as given.
_META = ("station", "client", "model_id", "model_version", "latency_ms")


class RecordNotFound(RecordsError, LookupError):
    """No inspection with that id."""


class RecordStore:
    """Recorded inspections, reviews and model versions, with their images.

    Parameters
    ----------
    url : str or path-like, optional
        ``None``: SQLite ``records.db`` in :func:`~gaikan.records.schema.data_dir`;
        a path or ``sqlite:///PATH``: SQLite there; ``postgresql://…``: a
        shared PostgreSQL database.  The schema is migrated at open.
    blob_dir : path-like, optional
        Where images and overlays are kept (content-addressed).  Default:
        ``blobs/`` next to a SQLite file, else ``blobs/`` in the data directory.
    retention : Retention, optional
        Which images are kept and for how long (default: defect and error
        images, no limits).

    Notes
    -----
    Safe to share between threads and between processes (SQLite WAL, busy
    timeout; PostgreSQL as usual).
    """

    def __init__(
        self,
        url: str | os.PathLike | None = None,
        *,
        blob_dir: str | os.PathLike | None = None,
        retention: Retention | None = None,
    ) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        self.url = resolve_url(url)
        self.retention = retention or Retention()
        self.blobs = BlobStore(blob_dir if blob_dir is not None else blob_dir_for(self.url))
        self.engine = make_engine(self.url)
        try:
            upgrade(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise RecordsError(f"cannot open the database {self.safe_url}: {exc}") from None
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    @property
    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        """Release the database connections (the records' and the pictures')."""
        self.engine.dispose()
        self.blobs.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self) -> Any:
        from sqlalchemy.orm import Session

        return Session(self.engine, expire_on_commit=False)

    # -- adding ------------------------------------------------------------
    def add(
        self,
        inspection: Any,
        *,
        source: str | None = None,
        station: str | None = None,
        client: str | None = None,
        image_bytes: bytes | None = None,
        overlay_png: bytes | None = None,
        model_id: str | None = None,
        model_version: int | None = None,
        latency_ms: float | None = None,
        dest: str | None = None,
        digest: str | None = None,
    ) -> int:
        """Record one :class:`~gaikan.inspection.Inspection`; return its id once committed.

        Parameters
        ----------
        inspection : Inspection
        source : str, optional
            The file name or upload label (default: ``inspection.file``).
        station, client : str, optional
            Which station and which client (token name, host, ``cli``).
        image_bytes : bytes, optional
            The inspected file's bytes: its SHA-256 is the record's digest;
            kept on disk when the retention policy keeps this verdict.
        overlay_png : bytes, optional
            The overlay picture, kept with the image.
        model_id, model_version : optional
            Which model (see :meth:`register_model`).
        latency_ms : float, optional
            Time from receiving the image to the verdict.
        dest : str, optional
            Where the watcher will move the file (the watch journal).
        digest : str, optional
            The image's SHA-256 when ``image_bytes`` is not given.
        """
        kw = dict(
            source=source,
            station=station,
            client=client,
            image_bytes=image_bytes,
            overlay_png=overlay_png,
            model_id=model_id,
            model_version=model_version,
            latency_ms=latency_ms,
            dest=dest,
            digest=digest,
        )
        return self.add_many([(inspection, kw)])[0]

    def add_many(self, entries: Iterable[tuple[Any, dict[str, Any]]]) -> list[int]:
        """Record several inspections in one transaction; return their ids, in order.

        Each entry is ``(inspection, keyword arguments of add)``; paths are
        taken as text.  Nothing is recorded if the commit fails.  The kept
        pictures are committed first, each distinct one once, all in one
        transaction of the picture store; then the rows.

        Notes
        -----
        One Core ``INSERT … RETURNING id`` for all rows (not the ORM unit of
        work): the station commits a few rows at a time under load, and the
        ORM's per-flush bookkeeping cost it several times the insert itself.
        """
        from sqlalchemy import insert

        entries = list(entries)
        if not entries:
            return []
        kept = list(
            dict.fromkeys(
                blob
                for ins, kw in entries
                if self.retention.keeps(ins.verdict)
                for blob in (kw.get("image_bytes"), kw.get("overlay_png"))
                if blob
            )
        )
        keys = dict(zip(kept, self.blobs.put_many(kept)))
        rows = [self._row(ins, keys, **kw) for ins, kw in entries]
        stmt = insert(InspectionRow).returning(InspectionRow.id, sort_by_parameter_order=True)
        with self.engine.begin() as conn:
            ids = [int(r[0]) for r in conn.execute(stmt, rows)]
        self._maybe_prune()
        return ids

    def _row(
        self,
        ins: Any,
        keys: dict[bytes, str],
        *,
        source: Any = None,
        image_bytes: bytes | None = None,
        overlay_png: bytes | None = None,
        digest: str | None = None,
        dest: Any = None,
        **meta: Any,
    ) -> dict[str, Any]:
        """One ``inspections`` row; ``keys``: the stored pictures' keys by their bytes."""
        if image_bytes is not None:
            digest = keys.get(image_bytes) or sha256(image_bytes)
        row = _row(ins, None if source is None else str(source), digest)
        keep = self.retention.keeps(ins.verdict)
        row["image_key"] = keys[image_bytes] if keep and image_bytes else None
        row["overlay_key"] = keys[overlay_png] if keep and overlay_png else None
        row["dest"] = None if dest is None else str(dest)
        for key in _META:
            row[key] = meta.pop(key, None)
        if meta:
            raise TypeError(f"add() got an unexpected keyword argument {next(iter(meta))!r}")
        return row

    # -- reading -----------------------------------------------------------
    def get(self, record_id: int) -> Record:
        """The inspection ``record_id``; :class:`RecordNotFound` when there is none."""
        with self._session() as s:
            row = s.get(InspectionRow, int(record_id))
            if row is None:
                raise RecordNotFound(f"no inspection with id {record_id}")
            return Record.from_row(row)

    def query(
        self,
        filters: Filters | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        newest_first: bool = True,
    ) -> list[Record]:
        """A page of inspections matching ``filters`` (newest first by default)."""
        from sqlalchemy import select

        if limit < 0 or offset < 0:
            raise ParameterError(f"limit and offset must be ≥ 0, got {limit}, {offset}")
        t = InspectionRow
        order = (t.id.desc(),) if newest_first else (t.id.asc(),)
        stmt = (filters or Filters()).apply(select(t)).order_by(*order).limit(limit).offset(offset)
        with self._session() as s:
            return [Record.from_row(r) for r in s.scalars(stmt)]

    def count(self, filters: Filters | None = None) -> int:
        """How many inspections match ``filters``."""
        from sqlalchemy import func, select

        stmt = (filters or Filters()).apply(select(func.count(InspectionRow.id)))
        with self._session() as s:
            return int(s.scalar(stmt) or 0)

    def stats(
        self,
        filters: Filters | None = None,
        *,
        bucket_s: int = 3600,
        origin: datetime | None = None,
    ) -> list[Bucket]:
        """Counts per time bucket (see :func:`gaikan.records.stats.stats`)."""
        return stats(self.engine, filters, bucket_s=bucket_s, origin=origin)

    def image(self, record_id: int) -> bytes | None:
        """The inspected image's bytes, or None when not kept or pruned."""
        rec = self.get(record_id)
        return self.blobs.get(rec.image_key) if rec.image_available and rec.image_key else None

    def overlay(self, record_id: int) -> bytes | None:
        """The overlay PNG, or None when not kept or pruned."""
        rec = self.get(record_id)
        key = rec.overlay_key
        return self.blobs.get(key) if key and rec.image_pruned_at is None else None

    # -- review ------------------------------------------------------------
    def review(
        self, record_id: int, verdict: str, note: str | None = None, who: str | None = None
    ) -> Record:
        """An operator confirms (same verdict) or overrides (``ok`` ↔ ``defect``) a verdict."""
        if verdict not in ("ok", "defect"):
            raise ParameterError(f"review verdict {verdict!r}: use ok or defect")
        now = datetime.now(UTC)
        with self._session() as s, s.begin():
            row = s.get(InspectionRow, int(record_id), with_for_update=True)
            if row is None:
                raise RecordNotFound(f"no inspection with id {record_id}")
            previous = row.review_verdict or row.verdict
            s.add(
                ReviewRow(
                    inspection_id=row.id,
                    created_at=now,
                    verdict=verdict,
                    previous=previous,
                    note=note,
                    who=who,
                )
            )
            row.review_verdict, row.reviewed_by, row.reviewed_at = verdict, who, now
            s.flush()
            return Record.from_row(row)

    def reviews(self, record_id: int) -> list[Review]:
        """The review history of one inspection, oldest first."""
        from sqlalchemy import select

        stmt = select(ReviewRow).where(ReviewRow.inspection_id == int(record_id))
        with self._session() as s:
            return [Review.from_row(r) for r in s.scalars(stmt.order_by(ReviewRow.id))]

    # -- model versions ----------------------------------------------------
    def register_model(self, model_id: str, path: Any = None, **kw: Any) -> ModelVersion:
        """Record a model version (see :func:`gaikan.records.versions.register`)."""
        return versions.register(self.engine, model_id, path, **kw)

    def activate_model(self, model_id: str, version: int, who: str | None = None) -> ModelVersion:
        """Make a registered version the active one."""
        return versions.activate(self.engine, model_id, version, who)

    def model_versions(self, model_id: str | None = None) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        return versions.list_versions(self.engine, model_id)

    def active_model(self, model_id: str) -> ModelVersion | None:
        """The active version of ``model_id``."""
        return versions.active(self.engine, model_id)

    def model_activations(self, model_id: str) -> list[dict[str, Any]]:
        """Who activated which version of ``model_id`` when, oldest first."""
        return versions.activations(self.engine, model_id)

    def use_model(self, model_id: str, path: str | os.PathLike, **kw: Any) -> ModelVersion:
        """Register the file a station runs with; activate it when nothing is active yet."""
        mv = self.register_model(model_id, path, **kw)
        if self.active_model(model_id) is None:
            mv = self.activate_model(model_id, mv.version, who="station")
        return mv

    # -- watch journal and MQTT outbox --------------------------------------
    def pending_move(self, source: str, digest: str) -> Record | None:
        """The record of ``source`` with this digest that was not moved yet, if any."""
        from sqlalchemy import select

        t = InspectionRow
        stmt = select(t).where(t.source == source, t.digest == digest, t.moved_at.is_(None))
        stmt = stmt.where(t.dest.is_not(None)).order_by(t.id)
        with self._session() as s:
            row = s.scalars(stmt).first()
            return None if row is None else Record.from_row(row)

    def unmoved(self, source_prefix: str) -> list[Record]:
        """Records whose file (under ``source_prefix``) was to be moved but is not marked so."""
        from sqlalchemy import select

        t = InspectionRow
        stmt = select(t).where(t.dest.is_not(None), t.moved_at.is_(None))
        stmt = stmt.where(t.source.startswith(source_prefix, autoescape=True)).order_by(t.id)
        with self._session() as s:
            return [Record.from_row(r) for r in s.scalars(stmt)]

    def mark_moved(self, record_ids: int | Iterable[int]) -> None:
        """The watcher moved these records' files to their ``dest``."""
        ids = [record_ids] if isinstance(record_ids, int) else list(record_ids)
        self._update(ids, moved_at=datetime.now(UTC))

    def unpublished(self, limit: int = 100) -> list[Record]:
        """The oldest records not yet published (the MQTT outbox)."""
        from sqlalchemy import select

        t = InspectionRow
        stmt = select(t).where(t.published.is_(False)).order_by(t.id).limit(limit)
        with self._session() as s:
            return [Record.from_row(r) for r in s.scalars(stmt)]

    def outbox_size(self) -> int:
        """How many records are not yet published."""
        from sqlalchemy import func, select

        t = InspectionRow
        with self._session() as s:
            return int(s.scalar(select(func.count(t.id)).where(t.published.is_(False))) or 0)

    def mark_published(self, ids: Iterable[int]) -> None:
        """The broker acknowledged these records' messages."""
        self._update(list(ids), published=True)

    def _update(self, ids: list[int], **values: Any) -> None:
        from sqlalchemy import update

        with self._session() as s, s.begin():
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                s.execute(update(InspectionRow).where(InspectionRow.id.in_(chunk)).values(**values))

    # -- retention -----------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Apply the retention limits now; return how many pictures were removed.

        Records are marked (``image_pruned_at``) before their pictures go, so a
        crash in between leaves only pictures that the next run removes.
        """
        from sqlalchemy import or_, update

        r = self.retention
        max_age = None if r.max_age_days is None else r.max_age_days * 86400.0
        doomed = self.blobs.select_expired(max_age_s=max_age, max_bytes=r.max_bytes, now=now)
        t = InspectionRow
        when = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        with self._session() as s, s.begin():
            for i in range(0, len(doomed), 500):
                chunk = doomed[i : i + 500]
                s.execute(
                    update(t)
                    .where(or_(t.image_key.in_(chunk), t.overlay_key.in_(chunk)))
                    .where(t.image_pruned_at.is_(None))
                    .values(image_pruned_at=when)
                )
        self.blobs.delete_many(doomed)
        return len(doomed)

    def _maybe_prune(self) -> None:
        if not self.retention.limited or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        if self._prune_lock.acquire(blocking=False):
            try:
                self._last_prune = time.monotonic()
                self.prune()
            finally:
                self._prune_lock.release()


def _row(ins: Any, source: str | None, digest: str | None) -> dict[str, Any]:
    """The inspection's columns of its ``inspections`` row (the rest is set by the caller)."""
    return dict(
        created_at=datetime.now(UTC),
        source=source if source is not None else ins.file,
        digest=digest,
        verdict=ins.verdict,
        score=ins.score,
        threshold=ins.threshold,
        cls=ins.cls,
        confidence=ins.confidence,
        probabilities=ins.probabilities,
        map_max=ins.map_max,
        map_mean=ins.map_mean,
        peak_row=ins.peak_row,
        peak_col=ins.peak_col,
        error=ins.error,
        published=False,
    )


def blob_dir_for(url: str | os.PathLike | None) -> Path:
    """The default image folder for a database URL."""
    db_file = sqlite_path(resolve_url(url))
    return (db_file.parent if db_file else data_dir()) / "blobs"
