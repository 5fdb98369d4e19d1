"""What the store gives back: a recorded inspection, a review, a model version."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

__all__ = ["ModelVersion", "Record", "Review", "utc"]


def utc(value: datetime | None) -> datetime | None:
    """A database time as an aware UTC datetime (SQLite returns naive ones)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(obj: Any) -> dict[str, Any]:
    out = asdict(obj)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out


class _FromRow:
    @classmethod
    def from_row(cls, row: Any) -> Any:
        vals = {f.name: getattr(row, f.name) for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: utc(v) if isinstance(v, datetime) else v for k, v in vals.items()})


@dataclass(frozen=True)
class Record(_FromRow):
    """One recorded inspection (every column of ``inspections``).

    ``verdict`` is the model's; ``review_verdict`` the operator's latest
    (None until reviewed); :attr:`final_verdict` the one that counts.
    ``image_key`` / ``overlay_key`` are None when retention did not keep
    them; ``image_pruned_at`` is set once they were removed.
    """

    id: int
    created_at: datetime
    station: str | None
    client: str | None
    source: str | None
    digest: str | None
    verdict: str
    score: float | None
    threshold: float | None
    cls: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    map_max: float | None
    map_mean: float | None
    peak_row: int | None
    peak_col: int | None
    model_id: str | None
    model_version: int | None
    latency_ms: float | None
    error: str | None
    image_key: str | None
    overlay_key: str | None
    image_pruned_at: datetime | None
    review_verdict: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    dest: str | None
    moved_at: datetime | None
    published: bool

    @property
    def final_verdict(self) -> str:
        """The operator's verdict when reviewed, else the model's."""
        return self.review_verdict or self.verdict

    @property
    def image_available(self) -> bool:
        """Whether the image is kept and not pruned."""
        return self.image_key is not None and self.image_pruned_at is None

    def to_json(self) -> dict[str, Any]:
        """JSON-able data (times in ISO 8601, UTC)."""
        out = _json(self)
        out["final_verdict"] = self.final_verdict
        out["image_available"] = self.image_available
        return out


@dataclass(frozen=True)
class Review(_FromRow):
    """One operator review of an inspection."""

    id: int
    inspection_id: int
    created_at: datetime
    verdict: str
    previous: str
    note: str | None
    who: str | None

    def to_json(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class ModelVersion(_FromRow):
    """One version of a model."""

    id: int
    model_id: str
    version: int
    created_at: datetime
    path: str | None
    digest: str | None
    threshold: float | None
    note: str | None
    parent_version: int | None
    active: bool
    activated_at: datetime | None
    activated_by: str | None

    def to_json(self) -> dict[str, Any]:
        return _json(self)
