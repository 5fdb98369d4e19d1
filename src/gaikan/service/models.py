"""The station's model versions over HTTP: list, refit from reviewed goods, activate, the page.

Routes (under ``/v1``, so the bearer token guards them when one is set):

- ``GET /v1/models``: every version of the served model id (number,
  digest, threshold, created, note, parent, file name, active, served,
  activations with who/when) and whether a refit is possible here.
- ``POST /v1/models/refit``: build a candidate from the unit space
  (``gaikan serve --unit-space DIR``) plus the stored images of records
  reviewed as good (:mod:`.refit`), in a worker thread; ``202`` with the
  job, or ``200`` with its result when it finishes within ``?wait=SECONDS``.
  The candidate is registered **inactive**.
- ``GET /v1/models/refits/{job}``: a refit job's state and result.
- ``POST /v1/models/{version}/activate``: JSON ``{"who"}`` (optional);
  records who/when and swaps the served model.
- ``GET /models`` (+ ``/static/models.js``): the Models page.

Swapping the model
------------------
The routes of :mod:`.routes` are given a :class:`LiveInspector`, which
hands each request to the inspector that is current when the request
starts and remembers it on the request's uploads, so an inspection
started before an activation is scored *and recorded* with the old model
and version, and every inspection started after it with the new one.
Each version has its own :class:`~gaikan.service.recording.Recorder`
(:meth:`~gaikan.service.recording.Recorder.for_version`: the same store and
writer process) stamping its version on the records.
The swap itself is one reference assignment.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ..errors import GaikanError
from .errors import ApiError
from .inspector import Inspector, load_model
from .logs import event
from .recording import Recorder, identity
from .refit import RefitRefused, build_candidate, check_refittable, unit_space_files

__all__ = ["LiveInspector", "ModelSwitch", "RefitJob", "add_model_routes"]

log = logging.getLogger("gaikan.service")

#: Refit jobs remembered (oldest forgotten first).
MAX_JOBS = 20
#: Longest ``?wait=`` of ``POST /v1/models/refit``, seconds.
MAX_WAIT_S = 600.0
_UPLOAD_TAG = "_gaikan_recorder"


# ---------------------------------------------------------------- the swappable model
class _RecorderDispatch:
    """``inspector.recorder`` as the routes see it: commits through the uploads' own recorder."""

    def __init__(self, live: LiveInspector) -> None:
        self._live = live

    def submit(self, uploads: list[Any], client: str | None) -> Future:
        rec = getattr(uploads[0], _UPLOAD_TAG, None) if uploads else None
        if rec is None:
            rec = self._live.current.recorder
        assert rec is not None  # a LiveInspector's inspectors all record
        return rec.submit(uploads, client)

    def record(self, uploads: list[Any], client: str | None) -> list[int]:
        return list(self.submit(uploads, client).result())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live.current.recorder, name)


class LiveInspector:
    """The served :class:`~gaikan.service.inspector.Inspector`, swappable while serving.

    Every attribute is the current inspector's; :meth:`inspect_request`
    runs on the inspector current when it is called and tags the uploads
    with that inspector's recorder, which ``recorder.submit`` then uses.

    Parameters
    ----------
    inspector : Inspector
        The inspector served first (it must have a recorder).
    """

    def __init__(self, inspector: Inspector) -> None:
        if inspector.recorder is None:
            raise ValueError("a LiveInspector needs a recording inspector")
        self._current = inspector
        self.recorder = _RecorderDispatch(self)

    @property
    def current(self) -> Inspector:
        """The inspector new requests run on."""
        return self._current

    def swap(self, new: Inspector) -> Inspector:
        """Serve ``new`` from the next request on; the previous inspector."""
        old, self._current = self._current, new
        return old

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)

    def inspect_request(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
        """:meth:`Inspector.inspect_request` on the current inspector; uploads tagged."""
        cur = self._current
        payload, uploads = cur.inspect_request(*args, **kwargs)
        for u in uploads:
            setattr(u, _UPLOAD_TAG, cur.recorder)
        return payload, uploads

    def inspect_body(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """:meth:`Inspector.inspect_body` on the current inspector."""
        return self._current.inspect_body(*args, **kwargs)

    def model_info(self) -> dict[str, Any]:
        """:meth:`Inspector.model_info` of the current inspector."""
        return self._current.model_info()


# ---------------------------------------------------------------- refit jobs
@dataclass
class RefitJob:
    """One refit: ``running``, then ``done`` (with ``result``) or ``failed`` (with ``error``)."""

    id: str
    started_at: datetime
    state: str = "running"
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    status: int | None = None  # the HTTP status of a failure
    future: Future | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "state": self.state,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "result": self.result,
            "error": self.error,
            "url": f"/v1/models/refits/{self.id}",
        }


class ModelSwitch:
    """Versions, activation and refit of the served model id (one per app).

    Parameters
    ----------
    live : LiveInspector
    unit_space : path-like, optional
        The unit-space folder (``--unit-space``).
    """

    def __init__(self, live: LiveInspector, unit_space: str | os.PathLike | None = None) -> None:
        base = live.current
        rec = base.recorder
        assert rec is not None
        self.live = live
        self.store = rec.store
        self.model_id: str = rec.model_id or "in-memory"
        self.unit_space = None if unit_space is None else Path(unit_space)
        self._base = rec
        self._recorders: dict[int | None, Recorder] = {rec.model_version: rec}
        self._lock = threading.Lock()  # one activation at a time
        self._jobs: dict[str, RefitJob] = {}
        self._job_ids = itertools.count(1)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def served_version(self) -> int | None:
        """The version this station serves now."""
        rec = self.live.current.recorder
        return None if rec is None else rec.model_version

    # -- listing -----------------------------------------------------------
    def listing(self) -> dict[str, Any]:
        """``GET /v1/models``'s body."""
        from ..records import Filters

        served = self.served_version
        acts: dict[int, list[dict[str, Any]]] = {}
        for a in self.store.model_activations(self.model_id):
            at = a["at"]
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
            acts.setdefault(a["version"], []).append({"at": at.isoformat(), "who": a["who"]})
        versions = []
        for v in self.store.model_versions(self.model_id):
            out = v.to_json()
            out.pop("id", None)
            out["file"] = Path(v.path).name if v.path else None
            out.pop("path", None)
            out["served"] = v.version == served
            out["activations"] = acts.get(v.version, [])
            versions.append(out)
        reason = None
        try:
            check_refittable(self.live.current.det)
            unit_space_files(self.unit_space)
        except RefitRefused as exc:
            reason = exc.message
        goods = self.store.count(Filters(reviewed=True, verdict="ok", model_id=self.model_id))
        return {
            "model_id": self.model_id,
            "served_version": served,
            "served_threshold": self.live.current.threshold,
            "versions": versions,
            "refit": {
                "available": reason is None,
                "reason": reason,
                "reviewed_goods": goods,
                "running": self._running() is not None,
            },
        }

    # -- activation ----------------------------------------------------------
    def activate(self, version: int, who: str | None) -> dict[str, Any]:
        """Record the activation of ``version`` (who, when) and serve it.

        The model is loaded and checked before anything is recorded; the
        swap happens after the database says the version is active.

        Raises
        ------
        ApiError
            404 no such version; 409 its file is not on this station or
            changed; 422 the file cannot be served.
        """
        with self._lock:
            mv = next(
                (v for v in self.store.model_versions(self.model_id) if v.version == version),
                None,
            )
            if mv is None:
                raise ApiError(
                    404,
                    f"model {self.model_id!r} has no version {version}; GET /v1/models lists them",
                )
            previous = self.served_version
            new = None
            if version != previous:
                new = self._inspector_for(mv)
            mv = self.store.activate_model(self.model_id, version, who=who)
            if new is not None:
                self.live.swap(new)
        event(
            "model_activated",
            model_id=self.model_id,
            version=version,
            previous_version=previous,
            who=who,
            threshold=self.live.current.threshold,
        )
        out = mv.to_json()
        out.pop("path", None)
        out["served"] = True
        out["previous_version"] = previous
        return out

    def _inspector_for(self, mv: Any) -> Inspector:
        from ..records.versions import file_digest

        if mv.path is None:
            raise ApiError(
                409,
                f"version {mv.version} of {self.model_id!r} has no model file recorded; "
                "serve its file with gaikan serve FILE instead",
            )
        path = Path(mv.path)
        if not path.is_file():
            raise ApiError(
                409,
                f"the model file of version {mv.version} ({path}) is not on this station; copy "
                "it there (same path) or serve it with gaikan serve FILE",
            )
        if mv.digest and file_digest(path) != mv.digest:
            raise ApiError(
                409,
                f"the model file of version {mv.version} ({path}) changed since it was "
                "registered (its SHA-256 differs); restore it or refit again",
            )
        try:
            model, name = load_model(str(path))
        except (GaikanError, TypeError, ImportError) as exc:
            raise ApiError(422, f"version {mv.version} cannot be served: {exc}") from None
        cur = self.live.current
        rec = self._recorders.get(mv.version)
        if rec is None:
            rec = self._base.for_version(mv.version)
            self._recorders[mv.version] = rec
        return Inspector(model, cur.config, cur.metrics, cur.overlays, name, rec)

    # -- refit ---------------------------------------------------------------
    def _running(self) -> RefitJob | None:
        return next((j for j in self._jobs.values() if j.state == "running"), None)

    def start_refit(self) -> RefitJob:
        """Check that a refit can run, then run it in the refit thread.

        Raises
        ------
        RefitRefused
            409: a refit is running, no unit space, no reviewed goods;
            422: the served model has no fit.
        """
        from .refit import reviewed_goods

        cur = self.live.current
        check_refittable(cur.det)
        unit_space_files(self.unit_space)
        rec = cur.recorder
        assert rec is not None
        goods = reviewed_goods(self.store, self.model_id)
        with self._lock:
            running = self._running()
            if running is not None:
                raise RefitRefused(
                    409,
                    f"a refit is already running (job {running.id}); wait for it: "
                    f"GET /v1/models/refits/{running.id}",
                )
            job = RefitJob(id=str(next(self._job_ids)), started_at=datetime.now(UTC))
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.pop(next(iter(self._jobs)))
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="gaikan-refit")
            kw = dict(
                store=self.store,
                model_id=self.model_id,
                parent_version=rec.model_version,
                unit_space=self.unit_space,
                old_threshold=cur.threshold,
                goods=goods,
            )
            job.future = self._pool.submit(self._run_refit, job, cur.det, kw)
        event("refit_started", job=job.id, model_id=self.model_id, reviewed_goods=len(goods))
        return job

    def _run_refit(self, job: RefitJob, model: Any, kw: dict[str, Any]) -> None:
        try:
            job.result = build_candidate(model, **kw)
            job.state = "done"
        except RefitRefused as exc:
            job.error, job.status, job.state = exc.message, exc.status, "failed"
        except (GaikanError, ValueError) as exc:
            job.error, job.status, job.state = f"the refit failed: {exc}", 422, "failed"
        except Exception:
            log.exception("refit job %s failed", job.id)
            job.error = "internal error during the refit (logged on the server)"
            job.status, job.state = 500, "failed"
        job.finished_at = datetime.now(UTC)
        if job.result is not None:
            r = job.result
            event(
                "refit_done",
                job=job.id,
                model_id=self.model_id,
                version=r["version"],
                old_threshold=r["old_threshold"],
                new_threshold=r["new_threshold"],
                n_images=r["n_images"],
                ng_to_ok=r["relabel"]["ng_to_ok"],
                ok_to_ng=r["relabel"]["ok_to_ng"],
            )
        else:
            event("refit_failed", level=logging.WARNING, job=job.id, error=job.error)

    def job(self, job_id: str) -> RefitJob | None:
        """A remembered refit job."""
        return self._jobs.get(job_id)

    def close(self) -> None:
        """Stop the refit thread and commit what the other versions' recorders hold.

        The first version's recorder is closed by the app (it closes the store).
        """
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for rec in list(self._recorders.values()):
            if rec is not self._base:
                rec.close()  # its thread only: the writer and store are the first one's


# ---------------------------------------------------------------- HTTP
class ActivateIn(BaseModel):
    """Who activates a version (optional)."""

    who: str | None = Field(
        None, max_length=200, description="Who activates (default: the client's identity)."
    )


def add_model_routes(
    app: FastAPI,
    live: LiveInspector,
    token_set: bool,
    unit_space: str | os.PathLike | None = None,
) -> ModelSwitch:
    """Add the model-version routes and the Models page to ``app``; the :class:`ModelSwitch`."""
    from .routes import _STATIC, _static_handler

    switch = ModelSwitch(live, unit_space)
    _warn_if_not_active(switch)
    for route, fname, ctype in (
        ("/models", "models.html", "text/html; charset=utf-8"),
        ("/static/models.js", "models.js", "text/javascript; charset=utf-8"),
    ):
        handler = _static_handler((_STATIC / fname).read_bytes(), ctype)
        app.add_api_route(route, handler, methods=["GET"], include_in_schema=False)

    @app.get("/v1/models", tags=["models"], summary="Every version of the served model")
    def list_models() -> dict[str, Any]:
        return switch.listing()

    @app.post(
        "/v1/models/refit",
        tags=["models"],
        summary="Build an inactive candidate version from the unit space and reviewed goods",
        status_code=202,
    )
    async def refit(
        wait: float = Query(
            0.0, ge=0.0, le=MAX_WAIT_S, description="Seconds to wait for the result"
        ),
    ) -> Response:
        loop = asyncio.get_running_loop()
        try:
            job = await loop.run_in_executor(None, switch.start_refit)
        except RefitRefused as exc:
            raise ApiError(exc.status, exc.message) from None
        if wait > 0 and job.future is not None:
            done = asyncio.wrap_future(job.future)
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout=wait)
            except TimeoutError:
                pass
        if job.state == "failed":
            raise ApiError(job.status or 500, job.error or "the refit failed")
        return JSONResponse(job.to_json(), status_code=200 if job.state == "done" else 202)

    @app.get("/v1/models/refits/{job_id}", tags=["models"], summary="A refit job")
    def refit_job(job_id: str) -> dict[str, Any]:
        job = switch.job(job_id)
        if job is None:
            raise ApiError(
                404, f"no refit job {job_id!r} (only the last {MAX_JOBS} are remembered)"
            )
        return job.to_json()

    @app.post(
        "/v1/models/{version}/activate",
        tags=["models"],
        summary="Activate a version: recorded with who/when; the station serves it at once",
    )
    def activate(version: int, request: Request, body: ActivateIn | None = None) -> dict[str, Any]:
        host = request.client.host if request.client else None
        who = (body.who if body is not None else None) or identity(host, token_set)
        return switch.activate(version, who)

    app.state.models = switch
    return switch


def _warn_if_not_active(switch: ModelSwitch) -> None:
    """A station restarted with a file other than the active version's says so."""
    active = switch.store.active_model(switch.model_id)
    if active is not None and active.version != switch.served_version:
        event(
            "served_version_not_active",
            level=logging.WARNING,
            model_id=switch.model_id,
            served_version=switch.served_version,
            active_version=active.version,
            message=(
                f"this station serves version {switch.served_version} of {switch.model_id!r} "
                f"but version {active.version} is the active one; activate the served one "
                "(POST /v1/models/VERSION/activate) or serve the active version's file"
            ),
        )
