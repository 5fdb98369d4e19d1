"""The station's tables (SQLAlchemy 2.x declarative models).

The schema is owned by the Alembic migrations in :mod:`gaikan.records.migrations`;
these classes describe the current revision and must change together with a
new migration (``tests/test_records.py`` checks that they agree).

Tables
------
inspections
    One row per inspected image: what, when, where from, which model, the
    verdict and its numbers, the stored image and overlay (content-addressed
    keys; ``image_pruned_at`` once retention removed them), the watch
    journal (``dest``, ``moved_at``) and the MQTT outbox (``published``).
reviews
    Every operator review of an inspection (history); the latest one is
    copied onto the inspection (``review_verdict``, ``reviewed_by``,
    ``reviewed_at``) so that lists can filter on it.
model_versions
    Every model file a station used or produced, numbered per ``model_id``;
    at most one active version per ``model_id``.
model_activations
    Every activation of a model version (who, when): the audit trail.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ActivationRow", "Base", "InspectionRow", "ModelVersionRow", "ReviewRow"]


class Base(DeclarativeBase):
    """Declarative base of the station's tables."""


class InspectionRow(Base):
    """One inspected image (see the module docstring)."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    station: Mapped[str | None] = mapped_column(String(200))
    client: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(64), index=True)
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    score: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    cls: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict | None] = mapped_column(JSON)
    map_max: Mapped[float | None] = mapped_column(Float)
    map_mean: Mapped[float | None] = mapped_column(Float)
    peak_row: Mapped[int | None] = mapped_column(Integer)
    peak_col: Mapped[int | None] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(String(64))
    overlay_key: Mapped[str | None] = mapped_column(String(64))
    image_pruned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_verdict: Mapped[str | None] = mapped_column(String(16))
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dest: Mapped[str | None] = mapped_column(Text)
    moved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_inspections_published", "published", "id"),
        Index("ix_inspections_image_key", "image_key"),
        Index("ix_inspections_overlay_key", "overlay_key"),
    )


class ReviewRow(Base):
    """One operator review: the verdict the operator confirmed or set."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(
        ForeignKey("inspections.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    who: Mapped[str | None] = mapped_column(String(200))


class ModelVersionRow(Base):
    """One version of a model: the file, its digest and threshold, when it was active."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    path: Mapped[str | None] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(64))
    threshold: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(Text)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    activated_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions"),)


class ActivationRow(Base):
    """One activation of a model version (audit trail)."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    who: Mapped[str | None] = mapped_column(String(200))
