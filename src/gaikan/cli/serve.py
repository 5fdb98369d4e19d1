"""`gaikan serve`: the inspection station (web UI + REST API) for one model."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "serve"]


@click.command("serve")
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
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(model, host, port, workers, token, max_upload_mb, max_pixels, max_files, log_level):
    """Serve MODEL as an inspection station: web UI at / and REST API under /v1.

    MODEL is a saved anomaly detector (gaikan fit: OK/NG by its threshold)
    or a saved classifier (gaikan train: the predicted class, OK when it is
    the good class).

    \b
    Endpoints: POST /v1/inspect (multipart field 'files'), GET /v1/model,
    GET /healthz, GET /metrics (Prometheus).  See docs/service.md.
    """
    try:
        import uvicorn

        from ..service.app import create_app
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise click.ClickException(
            f"gaikan serve needs the serve extra: pip install 'gaikan[serve]' ({exc})"
        ) from None
    from ..errors import GaikanError

    try:
        app = create_app(
            model,
            token=token or None,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=max_pixels,
            workers=workers,
            max_files=max_files,
        )
    except (GaikanError, ValueError, TypeError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo(
            "warning: listening beyond this machine without --token; anyone on the "
            "network can use the station",
            err=True,
        )
    click.echo(f"gaikan inspection station: http://{host}:{port}/  (Ctrl+C to stop)", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
    )


COMMANDS = [serve]
