"""Yield and defect rate per time bucket (hour, shift, day), for the history page.

Computed in Python from one streamed query, so SQLite and PostgreSQL give
the same numbers with no dialect-specific date functions.  Buckets are
aligned to ``origin`` (default: midnight UTC) and ``bucket_s`` long; a shift
is ``bucket_s=8*3600`` with ``origin`` at the first shift's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .models import InspectionRow
from .query import Filters
from .record import utc

__all__ = ["Bucket", "stats"]


@dataclass
class Bucket:
    """Counts over one time bucket (final verdicts: the operator's when reviewed)."""

    start: datetime
    n: int = 0
    ok: int = 0
    defect: int = 0
    error: int = 0
    reviewed: int = 0
    overridden: int = 0
    score_sum: float = 0.0
    scored: int = 0
    classes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        judged = self.ok + self.defect
        return {
            "start": self.start.isoformat(),
            "n": self.n,
            "ok": self.ok,
            "defect": self.defect,
            "error": self.error,
            "reviewed": self.reviewed,
            "overridden": self.overridden,
            "yield": self.ok / judged if judged else None,
            "defect_rate": self.defect / judged if judged else None,
            "score_mean": self.score_sum / self.scored if self.scored else None,
            "classes": dict(self.classes),
        }


def stats(
    engine: Any,
    filters: Filters | None = None,
    *,
    bucket_s: int = 3600,
    origin: datetime | None = None,
) -> list[Bucket]:
    """Counts per bucket for the inspections ``filters`` selects, oldest first.

    Parameters
    ----------
    engine : sqlalchemy Engine
    filters : Filters, optional
    bucket_s : int
        Bucket length in seconds (3600: per hour; 28800: per 8-hour shift).
    origin : datetime, optional
        Where buckets start (default: 1970-01-01 UTC, i.e. whole hours/days).

    Returns
    -------
    list of Bucket, only the buckets that have inspections.
    """
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    if bucket_s < 1:
        raise ValueError("bucket_s must be ≥ 1 second")
    t = InspectionRow
    origin = utc(origin) or datetime(1970, 1, 1, tzinfo=UTC)
    cols = (t.created_at, t.verdict, t.review_verdict, t.score, t.cls)
    stmt = (filters or Filters()).apply(select(*cols)).order_by(t.created_at)
    buckets: dict[int, Bucket] = {}
    with Session(engine) as s:
        for created, verdict, reviewed, score, cls in s.execute(stmt).yield_per(2000):
            k = int(((utc(created) or origin) - origin).total_seconds() // bucket_s)
            b = buckets.get(k)
            if b is None:
                b = buckets[k] = Bucket(origin + timedelta(seconds=k * bucket_s))
            final = reviewed or verdict
            b.n += 1
            setattr(b, final, getattr(b, final) + 1)
            b.reviewed += reviewed is not None
            b.overridden += reviewed is not None and reviewed != verdict
            if score is not None:
                b.score_sum, b.scored = b.score_sum + score, b.scored + 1
            if cls is not None:
                b.classes[cls] = b.classes.get(cls, 0) + 1
    return [buckets[k] for k in sorted(buckets)]
