"""The station's recorded inspections over HTTP: list, one, image, overlay, review, stats, CSV.

Routes (all under ``/v1``, so the bearer token guards them when one is set):

- ``GET /v1/inspections``: newest first; filters ``since``, ``until``
  (ISO 8601, UTC when no offset), ``verdict`` (ok/defect/error, the final
  verdict: the operator's when reviewed), ``reviewed`` (0/1), ``class``,
  ``station``, ``source`` (substring); paging ``limit`` (≤ 1000) and ``offset``.
- ``GET /v1/inspections/{id}`` (with its review history),
  ``/v1/inspections/{id}/image`` and ``/overlay`` (404 when not kept or pruned).
- ``POST /v1/inspections/{id}/review``: JSON ``{"verdict", "note", "who"}``.
- ``GET /v1/stats``: yield and defect rate per ``bucket=hour|shift|day``
  (shifts are ``shift_hours`` long from ``shift_start``, default 8 h from 06:00 UTC).
- ``GET /v1/inspections.csv``: the same filters, every matching row (up to ``limit``).
- ``GET /v1/identity``: who the server records as the caller of a review
  without a ``who`` (``token@ADDRESS`` with a token, else the address).
- ``GET /v1/control``: the Shewhart chart's centre line and ±3σ limits from
  the served model's leave-one-out scores (:func:`.control.control_limits`),
  and its threshold.

The handlers are plain functions: FastAPI runs them in its thread pool, so
database calls never block the event loop.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from ..errors import ParameterError
from .control import control_limits
from .errors import ApiError
from .recording import Recorder, identity

__all__ = ["CSV_COLUMNS", "add_history_routes"]

#: Most rows one list call returns.
MAX_PAGE = 1000
#: Most rows one CSV export returns.
MAX_CSV = 1_000_000
#: The CSV export's columns, in order.
CSV_COLUMNS = (
    "id",
    "created_at",
    "station",
    "client",
    "source",
    "digest",
    "verdict",
    "final_verdict",
    "score",
    "threshold",
    "cls",
    "confidence",
    "map_max",
    "map_mean",
    "peak_row",
    "peak_col",
    "model_id",
    "model_version",
    "latency_ms",
    "error",
    "review_verdict",
    "reviewed_by",
    "reviewed_at",
    "image_available",
    "image_pruned_at",
)
_BUCKETS = {"hour": 3600, "day": 86400}


class ReviewIn(BaseModel):
    """An operator's review of one inspection."""

    verdict: Literal["ok", "defect"] = Field(description="The operator's verdict.")
    note: str | None = Field(None, max_length=2000, description="Why (optional).")
    who: str | None = Field(
        None, max_length=200, description="Who reviewed (default: the client's identity)."
    )


def _when(name: str, raw: str | None) -> datetime | None:
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(
            400, f"query parameter {name!r} must be an ISO 8601 time, e.g. 2026-12-03T06:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _reviewed(raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise ApiError(400, f"query parameter 'reviewed' must be 0 or 1, got {raw!r}")


def _filters(
    since: str | None,
    until: str | None,
    verdict: str | None,
    reviewed: str | None,
    cls: str | None,
    station: str | None,
    source: str | None,
) -> Any:
    from ..records import VERDICTS, Filters

    verdicts = None
    if verdict:
        verdicts = [v.strip() for v in verdict.split(",") if v.strip()]
        bad = [v for v in verdicts if v not in VERDICTS]
        if bad:
            raise ApiError(400, f"verdict {bad[0]!r}: use one of {', '.join(VERDICTS)}")
    try:
        return Filters(
            since=_when("since", since),
            until=_when("until", until),
            verdict=verdicts,
            reviewed=_reviewed(reviewed),
            cls=cls or None,
            station=station or None,
            source=source or None,
        )
    except ParameterError as exc:
        raise ApiError(400, str(exc)) from None


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"BM"):
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return "application/octet-stream"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def add_history_routes(app: FastAPI, recorder: Recorder, token_set: bool) -> None:
    """Add the records routes to ``app`` (only when the station records)."""
    from ..records import RecordNotFound

    store = recorder.store

    def get_record(record_id: int) -> Any:
        try:
            return store.get(record_id)
        except RecordNotFound:
            raise ApiError(404, f"no inspection with id {record_id}") from None

    @app.get("/v1/inspections", tags=["records"], summary="Recorded inspections, newest first")
    def list_inspections(
        since: str | None = Query(None, description="ISO 8601; created_at ≥ since"),
        until: str | None = Query(None, description="ISO 8601; created_at < until"),
        verdict: str | None = Query(None, description="ok, defect, error (comma-separated)"),
        reviewed: str | None = Query(None, description="1: reviewed only; 0: not reviewed"),
        cls: str | None = Query(None, alias="class", description="A classifier's class"),
        station: str | None = Query(None),
        source: str | None = Query(None, description="Substring of the file name"),
        limit: int = Query(100, ge=0, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        f = _filters(since, until, verdict, reviewed, cls, station, source)
        items = store.query(f, limit=limit, offset=offset)
        return {
            "total": store.count(f),
            "limit": limit,
            "offset": offset,
            "items": [r.to_json() for r in items],
        }

    @app.get(
        "/v1/inspections.csv",
        tags=["records"],
        summary="Recorded inspections as CSV (same filters as the list)",
        response_class=StreamingResponse,
    )
    def export_csv(
        since: str | None = Query(None),
        until: str | None = Query(None),
        verdict: str | None = Query(None),
        reviewed: str | None = Query(None),
        cls: str | None = Query(None, alias="class"),
        station: str | None = Query(None),
        source: str | None = Query(None),
        limit: int = Query(MAX_CSV, ge=0, le=MAX_CSV),
    ) -> Response:
        f = _filters(since, until, verdict, reviewed, cls, station, source)
        # Rows are fetched page by page (oldest first) and written as they come.
        first = store.query(f, limit=min(limit, 1000), offset=0, newest_first=False)

        def rows() -> Any:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(CSV_COLUMNS)
            page, done = first, 0
            while page:
                for rec in page:
                    data = {**rec.to_json(), "created_at": rec.created_at}
                    w.writerow([_csv_value(data.get(c)) for c in CSV_COLUMNS])
                done += len(page)
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
                if done >= limit or len(page) < 1000:
                    break
                page = store.query(
                    f, limit=min(1000, limit - done), offset=done, newest_first=False
                )
            if buf.getvalue():
                yield buf.getvalue()

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="inspections-{stamp}.csv"'},
        )

    @app.get("/v1/inspections/{record_id}", tags=["records"], summary="One recorded inspection")
    def one_inspection(record_id: int) -> dict[str, Any]:
        rec = get_record(record_id)
        out = rec.to_json()
        out["reviews"] = [r.to_json() for r in store.reviews(record_id)]
        out["image_url"] = f"/v1/inspections/{record_id}/image" if rec.image_available else None
        out["overlay_url"] = (
            f"/v1/inspections/{record_id}/overlay"
            if rec.overlay_key and rec.image_pruned_at is None
            else None
        )
        return out

    def kept(record_id: int, what: str, read: Any) -> bytes:
        """The kept picture ``what`` of a record, or 404 saying why it is not there."""
        rec = get_record(record_id)
        data = read(record_id)
        if data is None:
            why = "was pruned" if rec.image_pruned_at else "was not kept (see --keep)"
            raise ApiError(404, f"the {what} of inspection {record_id} {why}")
        return data

    @app.get(
        "/v1/inspections/{record_id}/image",
        tags=["records"],
        summary="The inspected image, as uploaded",
        response_class=Response,
    )
    def inspection_image(record_id: int) -> Response:
        data = kept(record_id, "image", store.image)
        return Response(data, media_type=_image_type(data), headers=_PRIVATE)

    @app.get(
        "/v1/inspections/{record_id}/overlay",
        tags=["records"],
        summary="The overlay PNG of the inspection",
        response_class=Response,
    )
    def inspection_overlay(record_id: int) -> Response:
        data = kept(record_id, "overlay", store.overlay)
        return Response(data, media_type="image/png", headers=_PRIVATE)

    @app.post(
        "/v1/inspections/{record_id}/review",
        tags=["records"],
        summary="Confirm or override a verdict (ok ↔ defect)",
    )
    def review(record_id: int, body: ReviewIn, request: Request) -> dict[str, Any]:
        host = request.client.host if request.client else None
        who = body.who or identity(host, token_set)
        try:
            rec = store.review(record_id, body.verdict, note=body.note, who=who)
        except RecordNotFound:
            raise ApiError(404, f"no inspection with id {record_id}") from None
        out = rec.to_json()
        out["reviews"] = [r.to_json() for r in store.reviews(record_id)]
        return out

    @app.get("/v1/stats", tags=["records"], summary="Yield and defect rate per hour or shift")
    def stats(
        bucket: Literal["hour", "shift", "day"] = Query("hour"),
        shift_start: str = Query("06:00", description="HH:MM (UTC) when the first shift starts"),
        shift_hours: float = Query(8.0, gt=0, le=24),
        since: str | None = Query(None),
        until: str | None = Query(None),
        cls: str | None = Query(None, alias="class"),
        station: str | None = Query(None),
    ) -> dict[str, Any]:
        f = _filters(since, until, None, None, cls, station, None)
        origin = None
        if bucket == "shift":
            try:
                hh, mm = (int(x) for x in shift_start.split(":"))
                if not (0 <= hh < 24 and 0 <= mm < 60):
                    raise ValueError
            except ValueError:
                raise ApiError(
                    400, f"shift_start must be HH:MM, e.g. 06:00 (got {shift_start!r})"
                ) from None
            origin = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hh, minutes=mm)
            bucket_s = round(shift_hours * 3600)
        else:
            bucket_s = _BUCKETS[bucket]
        buckets = store.stats(f, bucket_s=bucket_s, origin=origin)
        return {
            "bucket": bucket,
            "bucket_s": bucket_s,
            "buckets": [b.to_json() for b in buckets],
        }

    @app.get(
        "/v1/identity",
        tags=["records"],
        summary="Who a review without 'who' is recorded as (the client's identity)",
    )
    def whoami(request: Request) -> dict[str, Any]:
        host = request.client.host if request.client else None
        return {"identity": identity(host, token_set)}

    @app.get(
        "/v1/control",
        tags=["records"],
        summary="Control limits of image scores (from the unit space's leave-one-out scores)",
    )
    def control(request: Request) -> dict[str, Any]:
        inspector = request.app.state.inspector
        out: dict[str, Any] = {
            "model_id": recorder.model_id,
            "model_version": recorder.model_version,
        }
        scores = getattr(inspector.det, "train_scores_", None)
        if scores is None:
            return {
                **out,
                "available": False,
                "threshold": inspector.threshold,
                "reason": "the served model has no leave-one-out scores of good images "
                "(a classifier, or a model file without them): no control limits",
            }
        try:
            limits = control_limits(scores, inspector.threshold)
        except ParameterError as exc:
            return {**out, "available": False, "threshold": inspector.threshold, "reason": str(exc)}
        return {**out, "available": True, **limits.to_json()}


_PRIVATE = {"Cache-Control": "private, max-age=3600"}
