"""`gaikan serve`: the inspection station (web UI + REST API) for one model."""

from __future__ import annotations

import logging

import click

from ._common import EXIT_CODES_HELP, Exit, fail, lang_option, retention_options

__all__ = ["COMMANDS", "serve"]


@click.command("serve", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0 = every interface: set --token then).",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 256),
    help="Scoring threads (default: the CPUs this process may use).",
)
@click.option(
    "--token",
    envvar="GAIKAN_TOKEN",
    default=None,
    show_envvar=True,
    help="Shared bearer token required on every API call.",
)
@click.option(
    "--max-upload-mb",
    default=32.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Largest request body (all files together), MiB.",
)
@click.option(
    "--max-pixels",
    default=25_000_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest image accepted, in pixels (before resizing).",
)
@click.option(
    "--max-files",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most files in one request.",
)
@click.option(
    "--read-timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds an upload may take to arrive (408 and the connection closed beyond).",
)
@click.option(
    "--max-uploads-per-client",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Inspect requests one client address may have in flight (429 beyond).",
)
@click.option(
    "--db",
    envvar="GAIKAN_DB",
    default=None,
    show_envvar=True,
    help="Records database: a file, sqlite:///PATH or postgresql://… (default: records.db "
    "in $GAIKAN_HOME or ~/.local/share/gaikan).",
)
@click.option(
    "--no-record",
    is_flag=True,
    help="Do not record inspections (the station forgets every verdict once answered).",
)
@retention_options
@click.option(
    "--model-id",
    default=None,
    help="Model name recorded with each result (default: the file's stem).",
)
@click.option(
    "--unit-space",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Folder of the good images MODEL was fitted on: 'refit from reviewed goods' "
    "(Models page, POST /v1/models/refit) fits a new version on them plus the parts "
    "reviewed as OK.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Lowest level logged (JSON lines on stderr; 'warning' drops the per-request lines).",
)
@lang_option(expose_value=True)
def serve(
    model,
    host,
    port,
    workers,
    token,
    max_upload_mb,
    max_pixels,
    max_files,
    read_timeout,
    max_uploads_per_client,
    db,
    no_record,
    keep,
    keep_days,
    keep_size,
    station,
    model_id,
    unit_space,
    log_level,
    lang,
):
    """Serve MODEL as an inspection station: web UI at / and REST API under /v1.

    MODEL is a saved anomaly detector (gaikan fit: OK/NG by its threshold)
    or a saved classifier (gaikan train: the predicted class, OK when it is
    the good class).

    Every answered inspection (errors included) is committed to the records
    database (--db) before the answer is sent, with its image and overlay
    per --keep; --no-record turns that off.  Operators' reviews feed back:
    with --unit-space, the Models page (/models) refits MODEL on its unit
    space plus the parts reviewed as OK and activates the new version on
    confirmation.

    \b
    Endpoints: POST /v1/inspect (multipart field 'files'), GET /v1/model,
    GET /v1/inspections[.csv], GET /v1/inspections/ID[/image|/overlay],
    POST /v1/inspections/ID/review, GET /v1/stats, GET /v1/models,
    POST /v1/models/refit, POST /v1/models/VERSION/activate, GET /v1/i18n
    (the page's texts), GET /openapi.json, GET /healthz, GET /readyz, GET
    /metrics (Prometheus).  Logs are JSON lines on stderr.  See
    docs/service.md.

    The page is in Japanese or English: --lang, else each browser's
    language; the page's switcher overrides both.
    """
    try:
        import uvicorn

        from ..service.app import create_app
        from ..service.logs import configure_logging, event
    except ImportError as exc:  # pragma: no cover - depends on the install
        fail(f"gaikan serve needs the serve extra: pip install 'gaikan[serve]' ({exc})")
    from ..errors import GaikanError, ParameterError

    configure_logging(log_level)
    if no_record and (db is not None or keep_days is not None or keep_size is not None):
        fail("--no-record cannot be combined with --db, --keep-days or --keep-size", Exit.USAGE)
    if no_record and unit_space is not None:
        fail("--unit-space is for refit from reviewed goods, which needs the records", Exit.USAGE)
    try:
        records = {} if no_record else _record_options(db, keep, keep_days, keep_size)
    except ParameterError as exc:
        fail(str(exc), Exit.USAGE)
    try:
        app = create_app(
            model,
            token=token or None,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=max_pixels,
            workers=workers,
            max_files=max_files,
            read_timeout_s=read_timeout,
            max_uploads_per_client=max_uploads_per_client,
            station=station,
            model_id=model_id,
            unit_space=unit_space,
            **records,
        )
    except ParameterError as exc:  # an option's value
        fail(str(exc), Exit.USAGE)
    except (GaikanError, TypeError, ImportError) as exc:  # the model file or its kind
        fail(str(exc), Exit.MODEL)
    except ValueError as exc:
        fail(str(exc), Exit.USAGE)
    _add_i18n(app, lang)
    _announce(host, port, token, event)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,  # configure_logging: uvicorn's lines are JSON too
        access_log=False,  # the station logs each request itself
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
    )


def _record_options(db, keep, keep_days, keep_size) -> dict:
    """create_app's recording keywords (the --keep-size text parsed)."""
    try:
        from ..records import parse_bytes
    except ImportError as exc:  # pragma: no cover - depends on the install
        fail(
            "recording needs the station extra: pip install 'gaikan[station]' "
            f"(or run with --no-record) ({exc})"
        )
    return dict(
        record=True, db=db, keep=keep, keep_days=keep_days, keep_size=parse_bytes(keep_size)
    )


def _add_i18n(app, lang: str | None) -> None:
    """The pages' language (--lang here or before the sub-command) and ``GET /v1/i18n``."""
    from ..i18n import chosen_lang
    from ..service.i18n import add_i18n_routes

    config = app.state.config
    if lang is not None or config.lang is None:
        config.lang = lang or chosen_lang()  # None: each browser's Accept-Language decides
    add_i18n_routes(app, config)  # a no-op once create_app adds them itself


def _announce(host: str, port: int, token: str | None, event) -> None:
    """Log where the station listens (and warn when it is open to the network)."""
    from ..i18n import t

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        event("no_token", level=logging.WARNING, message=t("serve.no_token"))
    url = f"http://{host}:{port}/"
    event("listening", url=url, message=t("serve.listening", url=url))


COMMANDS = [serve]
