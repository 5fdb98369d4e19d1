"""The inspection station's ASGI app: :func:`create_app` composes the parts.

Where things live
-----------------
- :mod:`.config`: :class:`ServiceConfig` and the default limits.
- :mod:`.edge`: the outermost ASGI layer (request ids, auth, admission,
  the read deadline, metrics, the access log, the catch-all for bugs).
- :mod:`.admission`: the in-flight and per-client caps, readiness.
- :mod:`.uploads`: body reading with a size cap, multipart parsing, file labels.
- :mod:`.inspector`: model adaptation, scoring and result dicts.
- :mod:`.overlays`: the bounded in-memory LRU of overlay PNGs.
- :mod:`.metrics`: Prometheus metrics (prometheus_client, one registry per app).
- :mod:`.logs`: JSON log lines.
- :mod:`.routes`: the HTTP routes.
- :mod:`.recording`: each answered inspection committed to the records
  database before the answer; :mod:`.history`: the records over HTTP
  (list, one, image, overlay, review, stats, CSV); :mod:`.models`: the
  model versions (list, refit from reviewed goods, activate, the Models
  page) and the swappable served model.

The model is loaded once and shared read-only (activating another version
swaps it between requests); scoring runs in a thread pool.  Every user error is a 4xx JSON body ``{"error": ..., "status": ...}``;
only a bug reaches the catch-all, which logs it and answers a bare JSON 500
(counted by ``gaikan_internal_errors_total``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI

from .._version import __version__
from .admission import Admission
from .config import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOADS_PER_CLIENT,
    DEFAULT_READ_TIMEOUT_S,
    ServiceConfig,
    make_config,
)
from .edge import Edge
from .errors import install_error_handlers
from .i18n import add_i18n_routes
from .inspector import Inspector, load_model
from .logs import event
from .metrics import ServiceMetrics
from .overlays import OverlayStore
from .recording import Recorder, open_recorder
from .routes import add_routes

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "ServiceConfig", "create_app"]


def create_app(
    model_path_or_detector: Any,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    max_files: int = DEFAULT_MAX_FILES,
    max_inflight: int | None = None,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_uploads_per_client: int = DEFAULT_MAX_UPLOADS_PER_CLIENT,
    overlay_entries: int = 512,
    overlay_bytes: int = 64 * 1024 * 1024,
    overlay_ttl_s: float = 3600.0,
    db: str | os.PathLike | None = None,
    record: bool | None = None,
    keep: str = "ng",
    keep_days: float | None = None,
    keep_size: int | None = None,
    station: str | None = None,
    model_id: str | None = None,
    lang: str | None = None,
    unit_space: str | os.PathLike | None = None,
) -> FastAPI:
    """Build the inspection station's FastAPI app around one model.

    Parameters
    ----------
    model_path_or_detector : str, os.PathLike, fitted detector or fitted classifier
        A gaikan model file (any kind :func:`gaikan.load` opens), an
        already fitted anomaly detector (anything with ``detect``,
        ``image_shape_`` and ``threshold_``) or an already fitted
        classifier (anything with ``predict_proba``, ``explain`` and
        ``classes_``; see :class:`~gaikan.service.inspector.Inspector` for
        its verdict and score).  It is shared read-only by all requests.
    token : str, optional
        Shared bearer token.  When set, every ``/v1/*`` and ``/metrics``
        call needs ``Authorization: Bearer <token>`` (else 401); ``/``, the
        static UI files, ``/healthz``, ``/readyz`` and the page's public
        translations ``/v1/i18n`` stay open.
    max_upload_bytes : int
        Cap on one request body (413 beyond it).
    max_pixels : int
        Cap on the pixels of one decoded image (per-file error beyond it).
        Pillow's own decompression-bomb limit is raised to it when lower.
    workers : int, optional
        Scoring threads; default the CPUs this process may use.
    max_files : int
        Cap on files per request (413 beyond it).
    max_inflight : int, optional
        Inspect requests accepted at once (503 beyond it); default
        ``max(64, 8 * workers)``.  Bounds memory under overload.
    read_timeout_s : float
        Seconds a request body may take to arrive (408 and the connection
        closed beyond it), so stalled uploads cannot hold the slots.
    max_uploads_per_client : int
        Inspect requests one client address may have in flight (429 with
        ``Retry-After`` beyond it).
    overlay_entries, overlay_bytes, overlay_ttl_s
        Bounds of the in-memory overlay LRU behind ``overlay_url``.
    db : str or path-like, optional
        The records database (SQLite path, ``sqlite:///…`` or
        ``postgresql://…``); giving one turns recording on.
    record : bool, optional
        Record every answered inspection (default: only when ``db`` is
        given; ``record=True`` without ``db`` uses the records' default
        SQLite database in the data directory).  Each result is committed
        before the answer is sent and carries its record ``id``; the
        ``/v1/inspections``, ``/v1/stats`` and review routes are added.
    keep : {"ng", "all", "none"}
        Which images and overlays the records keep.
    keep_days, keep_size
        Age (days) and size (bytes) limits on kept images.
    station : str, optional
        Station name on every record (default: the host name).
    model_id : str, optional
        Model id in the records (default: the model file's stem).
    lang : {"ja", "en"}, optional
        The page's language when the request names none (``?lang=``);
        default: the browser's Accept-Language.
    unit_space : str or path-like, optional
        The folder of good images the model was fitted on: "refit from
        reviewed goods" (``POST /v1/models/refit``) fits a candidate on
        them plus the images of records reviewed as good.  Needs recording.

    Returns
    -------
    fastapi.FastAPI
        With ``state.inspector``, ``state.metrics``, ``state.config``,
        ``state.admission``, ``state.recorder`` (None when not recording)
        and ``state.models`` (the model versions' switch, when recording).

    Raises
    ------
    gaikan.errors.ParameterError
        A bad token or limit.
    TypeError
        An object that is neither a fitted detector nor a fitted classifier.
    gaikan.records.RecordsError
        The records database cannot be opened.
    """
    config = make_config(
        token=token,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        workers=workers,
        max_files=max_files,
        max_inflight=max_inflight,
        read_timeout_s=read_timeout_s,
        max_uploads_per_client=max_uploads_per_client,
        overlay_entries=overlay_entries,
        overlay_bytes=overlay_bytes,
        overlay_ttl_s=overlay_ttl_s,
        lang=lang,
    )
    recording = bool(record or (record is None and db is not None))
    if unit_space is not None and not (recording and os.path.isdir(unit_space)):
        from ..errors import ParameterError

        raise ParameterError(
            f"--unit-space {os.fspath(unit_space)!r}: give the folder of good images the "
            "model was fitted on"
            + (
                ""
                if recording
                else " (refit from reviewed goods needs the records: drop --no-record)"
            )
        )
    model, model_name = load_model(model_path_or_detector)
    recorder = None
    if recording:
        from ..inspection import Inspector as CoreInspector

        path = (
            model_path_or_detector
            if isinstance(model_path_or_detector, (str, os.PathLike))
            else None
        )
        recorder = open_recorder(
            db,
            keep=keep,
            keep_days=keep_days,
            keep_size=keep_size,
            station=station,
            model_path=path,
            model_id=model_id,
            threshold=CoreInspector(model).threshold,
        )
    return _assemble(model, model_name, config, recorder, unit_space)


def _assemble(
    model: Any,
    model_name: str | None,
    config: ServiceConfig,
    recorder: Recorder | None = None,
    unit_space: str | os.PathLike | None = None,
) -> FastAPI:
    """The app: shared parts, lifespan, error handlers, routes and the edge layer."""
    metrics = ServiceMetrics()
    overlays = OverlayStore(config.overlay_entries, config.overlay_bytes, config.overlay_ttl_s)
    admission = Admission(config.max_inflight, config.max_uploads_per_client)
    inspector = Inspector(model, config, metrics, overlays, model_name, recorder)
    live = None
    if recorder is not None:  # the model versions can be swapped while serving
        from .models import LiveInspector

        live = LiveInspector(inspector)
        inspector = cast(Inspector, live)
    pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="gaikan-score")
    _export_gauges(metrics, inspector, overlays, admission, config)

    @asynccontextmanager
    async def lifespan(app: Any):
        _log_start(inspector, config)
        if recorder is not None:
            event(
                "recording",
                database=recorder.store.safe_url,
                keep=recorder.store.retention.keep,
                station=recorder.station,
                model_id=recorder.model_id,
                model_version=recorder.model_version,
            )
        try:
            yield
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if models is not None:
                models.close()
            if recorder is not None:
                recorder.close()

    models: Any = None  # the ModelSwitch, when recording (closed by the lifespan)
    app = FastAPI(
        title="gaikan inspection station",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.inspector = inspector
    app.state.metrics = metrics
    app.state.config = config
    app.state.admission = admission
    app.state.recorder = recorder
    install_error_handlers(app)
    add_i18n_routes(app, config)
    add_routes(
        app,
        inspector=inspector,
        config=config,
        metrics=metrics,
        overlays=overlays,
        admission=admission,
        pool=pool,
    )
    if recorder is not None and live is not None:
        from .history import add_history_routes
        from .models import add_model_routes

        add_history_routes(app, recorder, config.token is not None)
        models = add_model_routes(app, live, config.token is not None, unit_space)
    app.add_middleware(Edge, config=config, metrics=metrics, admission=admission)
    return app


def _export_gauges(
    metrics: ServiceMetrics,
    inspector: Inspector,
    overlays: OverlayStore,
    admission: Admission,
    config: ServiceConfig,
) -> None:
    """The live gauges of /metrics (read at scrape time)."""
    for name, help_, value in (
        ("gaikan_inspect_inflight", "Inspect requests being served.", lambda: admission.inflight),
        (
            "gaikan_inspect_inflight_limit",
            "Inspect requests accepted at once (503 beyond).",
            lambda: config.max_inflight,
        ),
        (
            "gaikan_ready",
            "1 when a new upload would be admitted.",
            lambda: admission.readiness()[0],
        ),
        (
            "gaikan_upload_clients",
            "Client addresses with an inspect request in flight.",
            lambda: len(admission.per_client),
        ),
        (
            "gaikan_client_uploads_inflight_max",
            "Most inspect requests in flight from one client address.",
            admission.busiest_client,
        ),
        (
            "gaikan_client_uploads_limit",
            "Inspect requests one client address may have in flight (429 beyond).",
            lambda: config.max_uploads_per_client,
        ),
        (
            "gaikan_model_threshold",  # absent for a classifier without a good class
            "Image-score threshold of the served model.",
            lambda: inspector.threshold,
        ),
        ("gaikan_overlay_cache_entries", "Overlay PNGs held in memory.", lambda: len(overlays)),
        (
            "gaikan_overlay_cache_bytes",
            "Bytes of overlay PNGs held in memory.",
            lambda: overlays.nbytes,
        ),
        ("gaikan_scoring_threads", "Size of the scoring thread pool.", lambda: config.workers),
    ):
        metrics.gauge(name, help_, value)


def _log_start(inspector: Inspector, config: ServiceConfig) -> None:
    """The start-up log line: model, kind, image size, threshold, limits, workers."""
    extra: dict[str, Any] = {}
    if inspector.is_classifier:
        extra = {"classes": inspector.classes, "good_class": inspector.good_class}
    event(
        "start",
        model=inspector.model_name or "in-memory model",
        model_class=type(inspector.det).__name__,
        kind=inspector.kind,
        image_shape=list(inspector.shape),
        threshold=inspector.threshold,
        **extra,
        limits=config.limits(),
        workers=config.workers,
        auth=config.token is not None,
    )
    if inspector.is_classifier and inspector.good_class is None:
        event(
            "no_good_class",
            level=30,
            message="the classifier has no good class (good_class, or a class named "
            "good/ok/normal/pass): every image will be judged 'defect'",
        )
