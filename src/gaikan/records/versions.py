"""Model versions: every model file a station used or produced, and its activations.

Versions are numbered 1, 2, … per ``model_id``.  Registering the same file
(same SHA-256) again returns the existing version, so a watcher that
restarts does not create a new one.  At most one version per ``model_id``
is active; every activation is recorded with who and when.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from .models import ActivationRow, ModelVersionRow
from .record import ModelVersion

__all__ = ["activate", "activations", "active", "file_digest", "list_versions", "register"]


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a model file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def register(
    engine: Any,
    model_id: str,
    path: str | os.PathLike | None = None,
    *,
    digest: str | None = None,
    threshold: float | None = None,
    note: str | None = None,
    parent_version: int | None = None,
) -> ModelVersion:
    """Record a model version (idempotent per file digest); it is not activated."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    if not model_id:
        raise ParameterError("model_id must not be empty")
    if digest is None and path is not None:
        digest = file_digest(path)
    for _attempt in range(3):  # two stations registering at once: the loser retries
        with Session(engine) as s:
            if digest is not None:
                old = s.scalars(
                    select(ModelVersionRow).where(
                        ModelVersionRow.model_id == model_id, ModelVersionRow.digest == digest
                    )
                ).first()
                if old is not None:
                    return ModelVersion.from_row(old)
            top = s.scalar(
                select(func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.model_id == model_id
                )
            )
            row = ModelVersionRow(
                model_id=model_id,
                version=(top or 0) + 1,
                created_at=datetime.now(UTC),
                path=None if path is None else str(Path(path).resolve()),
                digest=digest,
                threshold=threshold,
                note=note,
                parent_version=parent_version,
                active=False,
            )
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                continue
            return ModelVersion.from_row(row)
    raise ParameterError(f"could not register a version of {model_id!r}: too many at once")


def activate(engine: Any, model_id: str, version: int, who: str | None = None) -> ModelVersion:
    """Make ``version`` the active one of ``model_id`` (and record who did)."""
    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        row = s.scalars(
            select(ModelVersionRow).where(
                ModelVersionRow.model_id == model_id, ModelVersionRow.version == version
            )
        ).first()
        if row is None:
            raise ParameterError(f"model {model_id!r} has no version {version}")
        s.execute(
            update(ModelVersionRow)
            .where(ModelVersionRow.model_id == model_id, ModelVersionRow.id != row.id)
            .values(active=False)
        )
        row.active, row.activated_at, row.activated_by = True, now, who
        s.add(ActivationRow(model_id=model_id, version=version, at=now, who=who))
        s.flush()
        return ModelVersion.from_row(row)


def list_versions(engine: Any, model_id: str | None = None) -> list[ModelVersion]:
    """Every version (of one model, or of all), oldest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    stmt = select(ModelVersionRow).order_by(ModelVersionRow.model_id, ModelVersionRow.version)
    if model_id is not None:
        stmt = stmt.where(ModelVersionRow.model_id == model_id)
    with Session(engine) as s:
        return [ModelVersion.from_row(r) for r in s.scalars(stmt)]


def active(engine: Any, model_id: str) -> ModelVersion | None:
    """The active version of ``model_id`` (None when none was activated)."""
    return next((v for v in list_versions(engine, model_id) if v.active), None)


def activations(engine: Any, model_id: str) -> list[dict[str, Any]]:
    """The activation history of ``model_id``, oldest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    stmt = select(ActivationRow).where(ActivationRow.model_id == model_id)
    with Session(engine) as s:
        return [
            {"version": r.version, "at": r.at, "who": r.who}
            for r in s.scalars(stmt.order_by(ActivationRow.id))
        ]
