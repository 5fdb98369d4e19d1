"""Filters over recorded inspections, shared by lists, counts, exports and statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import ParameterError
from .models import InspectionRow

__all__ = ["VERDICTS", "Filters", "as_utc"]

VERDICTS = ("ok", "defect", "error")


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime (naive ones are taken as UTC already).

    Times are stored in UTC; SQLite keeps them as text without the offset,
    so every comparison must be made in UTC.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Filters:
    """Which inspections (every field optional; all given ones must hold).

    Attributes
    ----------
    since, until : datetime
        ``since ≤ created_at < until`` (aware datetimes; naive ones are UTC).
    verdict : str or sequence of str
        The final verdict (the operator's when reviewed, else the model's).
    reviewed : bool
        Only reviewed (True) or not yet reviewed (False) inspections.
    cls : str
        A classifier's predicted class.
    station, model_id : str
    model_version : int
    source : str
        A substring of the source (file name).
    digest : str
        The image's SHA-256.
    """

    since: datetime | None = None
    until: datetime | None = None
    verdict: str | Sequence[str] | None = None
    reviewed: bool | None = None
    cls: str | None = None
    station: str | None = None
    model_id: str | None = None
    model_version: int | None = None
    source: str | None = None
    digest: str | None = None

    def verdicts(self) -> list[str] | None:
        if self.verdict is None:
            return None
        vs = [self.verdict] if isinstance(self.verdict, str) else list(self.verdict)
        bad = [v for v in vs if v not in VERDICTS]
        if bad:
            raise ParameterError(f"verdict {bad[0]!r}: use one of {', '.join(VERDICTS)}")
        return vs

    def apply(self, stmt: Any) -> Any:
        """``stmt`` with this filter's WHERE clauses."""
        from sqlalchemy import func

        t = InspectionRow
        if self.since is not None:
            stmt = stmt.where(t.created_at >= as_utc(self.since))
        if self.until is not None:
            stmt = stmt.where(t.created_at < as_utc(self.until))
        vs = self.verdicts()
        if vs is not None:
            stmt = stmt.where(func.coalesce(t.review_verdict, t.verdict).in_(vs))
        if self.reviewed is not None:
            stmt = stmt.where(
                t.review_verdict.is_not(None) if self.reviewed else t.review_verdict.is_(None)
            )
        for col, val in (
            (t.cls, self.cls),
            (t.station, self.station),
            (t.model_id, self.model_id),
            (t.model_version, self.model_version),
            (t.digest, self.digest),
        ):
            if val is not None:
                stmt = stmt.where(col == val)
        if self.source is not None:
            stmt = stmt.where(t.source.contains(self.source, autoescape=True))
        return stmt
