"""``gaikan watch``: inspect the files a camera writes into a folder; record, sort, publish."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click

from ._common import (
    EXIT_CODES_HELP,
    Exit,
    fail,
    lang_option,
    load_model,
    max_pixels_option,
    retention_options,
    threshold_option,
)

__all__ = ["COMMANDS", "watch"]


def _open_store(db: str | None, keep: str, keep_days: float | None, keep_size: str | None) -> Any:
    from ..i18n import t

    try:
        from ..records import RecordStore, Retention, parse_bytes
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise click.ClickException(t("watch.needs_station", reason=exc)) from None
    retention = Retention(keep, max_age_days=keep_days, max_bytes=parse_bytes(keep_size))
    return RecordStore(db, retention=retention)


def _publisher(store: Any, mqtt: str | None, topic: str | None) -> Any:
    if mqtt is None:
        if topic is not None:
            raise click.UsageError("--topic needs --mqtt HOST:PORT")
        return None
    if topic is None:
        raise click.UsageError("--mqtt needs --topic, e.g. --topic line/station1")
    from ..mqtt import Publisher, parse_broker

    host, port = parse_broker(mqtt)
    return Publisher(store, host, port, topic).start()


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled in the main thread (e.g. tests)
    signal.signal(signal.SIGTERM, lambda *a: stop.set())


@click.command("watch", epilog=EXIT_CODES_HELP)
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "model", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--once", is_flag=True, help="Handle the files there now, then exit.")
@click.option(
    "--db",
    envvar="GAIKAN_DB",
    default=None,
    help="Database: a file, sqlite:///PATH or postgresql://… (default: records.db in $GAIKAN_HOME or ~/.local/share/gaikan).",
)
@retention_options
@click.option(
    "--mqtt", default=None, metavar="HOST:PORT", help="Publish each verdict to this MQTT broker."
)
@click.option("--topic", default=None, help="MQTT topic for the verdicts (with --mqtt).")
@click.option(
    "--model-id",
    default=None,
    help="Model name recorded with each result (default: the file's stem).",
)
@threshold_option("Override the model's threshold (finite, ≥ 0).")
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds a file must stay unchanged before it is read.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    help="Seconds between looks at the folder.",
)
@max_pixels_option()
@click.option("-q", "--quiet", is_flag=True, help="Do not print a line per file.")
@lang_option()
def watch(
    in_dir, model, once, db, keep, keep_days, keep_size, mqtt, topic, station, model_id,
    threshold, settle, poll, max_pixels, quiet,
):  # fmt: skip
    """Inspect the files a camera writes into IN_DIR with MODEL, as they are completed.

    Each file is recorded in the database, then moved to IN_DIR/ok, IN_DIR/ng
    or IN_DIR/error (unreadable files).  A file is taken once its size has not
    changed for --settle seconds and no process has it open for writing.
    Restarting after a crash neither loses nor repeats a file.  Stop with
    Ctrl+C or SIGTERM (the current file is finished first).
    """
    from ..errors import ParameterError
    from ..i18n import t
    from ..inspection import Inspector
    from ..watch import Watcher

    det = load_model(model)
    try:
        inspector = Inspector(det, threshold)
    except ParameterError as exc:
        fail(str(exc), Exit.MODEL)
    store = _open_store(db, keep, keep_days, keep_size)
    mv = store.use_model(model_id or Path(model).stem, model, threshold=inspector.threshold)
    publisher = _publisher(store, mqtt, topic)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    watcher = Watcher(
        in_dir,
        inspector,
        store,
        model_id=mv.model_id,
        model_version=mv.version,
        station=station or socket.gethostname(),
        settle_s=settle,
        poll_s=poll,
        max_pixels=max_pixels,
        on_record=None if publisher is None else publisher.wake,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    if not once:
        click.echo(
            t("watch.watching", dir=watcher.in_dir, model=mv.model_id, version=mv.version),
            err=True,
        )
    try:
        counts = watcher.run(stop, once=once)
    finally:
        left = 0
        if publisher is not None:
            left = publisher.flush(10.0 if once else 2.0)
            publisher.stop()
        store.close()
    resumed = t("watch.resumed", n=counts["resumed"]) if counts["resumed"] else ""
    click.echo(
        t(
            "watch.summary",
            ok=counts["ok"],
            defect=counts["defect"],
            error=counts["error"],
            resumed=resumed,
            db=store.safe_url,
        )
    )
    if left:
        click.echo(t("watch.unpublished", n=left), err=True)


COMMANDS = [watch]
