"""``gaikan inspect``: score files with a saved model; results.csv, overlays, report."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from ._common import (
    EXIT_CODES_HELP,
    Exit,
    collect,
    fail,
    lang_option,
    load_model,
    max_pixels_option,
    progress,
    threshold_option,
)

__all__ = ["inspect", "run_inspection"]


def run_inspection(
    inspector: Any,
    files: list[Path],
    out: Path,
    *,
    overlays: bool = True,
    batch_size: int = 32,
    max_pixels: int | None = None,
    show_progress: bool = True,
    on_batch: Callable[[list[Any]], Any] | None = None,
    parquet: bool = False,
) -> tuple[list[Any], str | None]:
    """Inspect ``files`` into ``out`` (results.csv flushed per batch, overlays).

    With ``parquet``, ``out/results.parquet`` gets the same rows, one row
    group per batch (:class:`gaikan.inspection.batch.ResultsParquet`).

    Returns
    -------
    (results, incomplete)
        Every result produced, and why the run stopped early (None when it
        finished).  Ctrl-C stops it between batches, keeping what was done.
    """
    from ..i18n import t
    from ..inspection import ResultsCSV, folder_labeller, inspect_files
    from ..inspection.batch import ResultsParquet

    results: list[Any] = []
    incomplete = None
    with (
        ResultsCSV(out / "results.csv") as csv_out,
        ResultsParquet(out / "results.parquet") if parquet else nullcontext() as pq_out,
        progress(len(files), t("progress.inspecting")) as bar,
    ):
        if not show_progress:
            bar.disable = True
        try:
            for batch in inspect_files(
                inspector,
                files,
                batch_size=batch_size,
                overlay_dir=out / "overlays" if overlays else None,
                label_of=folder_labeller(files),
                max_pixels=max_pixels,
                progress=bar.update,
            ):
                csv_out.write(batch)
                if pq_out is not None:
                    pq_out.write(batch)
                if on_batch is not None:  # e.g. --record: committed per batch
                    on_batch(batch)
                results.extend(batch)
        except KeyboardInterrupt:
            incomplete = t("inspect.interrupted_after", done=len(results), total=len(files))
    return results, incomplete


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    "output",
    default="gaikan-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for results.csv, overlays, report.",
)
@threshold_option("Override the model's threshold (finite, ≥ 0).")
@click.option("--no-overlays", is_flag=True, help="Do not write heatmap overlay PNGs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@max_pixels_option()
@click.option("--strict", is_flag=True, help="Exit 3 if any image is unreadable.")
@click.option("--record", is_flag=True, help="Also record every result in the station database.")
@click.option(
    "--db",
    envvar="GAIKAN_DB",
    default=None,
    help="Database for --record: a file, sqlite:///PATH or postgresql://… "
    "(default: the data directory).",
)
@click.option(
    "--fail-on-defect",
    is_flag=True,
    help="Exit 1 if any part is flagged, 3 if none is but a part could not be inspected.",
)
@click.option(
    "--allow-errors",
    is_flag=True,
    help="With --fail-on-defect: parts that could not be inspected do not fail the run.",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS|local:N",
    help="Spread the batches over a dask.distributed cluster: a scheduler address "
    "(tcp://host:8786) or local:N worker processes (pip install 'gaikan[distributed]'). "
    "Workers must read the image files (and OUTPUT for overlays) under the same paths.",
)
@click.option(
    "--parquet",
    is_flag=True,
    help="Also write OUTPUT/results.parquet (same rows and columns as results.csv, typed; "
    "one row group per batch; needs pyarrow: pip install 'gaikan[distributed]').",
)
@lang_option()
def inspect(
    model,
    images,
    output,
    threshold,
    no_overlays,
    batch_size,
    max_pixels,
    strict,
    record,
    db,
    fail_on_defect,
    allow_errors,
    dask_address,
    parquet,
):
    """Inspect IMAGES (files or folders, recursively) with a saved MODEL.

    Writes OUTPUT/results.csv (one row per file, written as it goes),
    OUTPUT/overlays/*.png and OUTPUT/report.html.  An MVTec AD folder is
    inspected through its test/ folder.  Every row has a verdict: ok,
    defect, or error (the file could not be inspected; the row says why).
    """
    from ..errors import ParameterError
    from ..i18n import current_lang, t
    from ..inspection import Inspector
    from ..io import is_mvtec
    from ..report import write_report

    det = load_model(model)
    try:
        inspector = Inspector(det)
    except ParameterError as exc:
        fail(str(exc), Exit.MODEL)
    if threshold is not None:
        try:
            inspector.set_threshold(threshold)
        except ParameterError as exc:
            fail(f"--threshold: {exc}", Exit.USAGE)
    inputs = tuple(str(Path(i) / "test") if is_mvtec(i) else i for i in images)
    files = collect(inputs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    on_batch = _recorder(db, model, inspector, out) if record else None
    if parquet:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            fail("--parquet needs pyarrow: pip install 'gaikan[distributed]'")
    if dask_address:
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            fail("--dask needs the distributed extra: pip install 'gaikan[distributed]'")
        from ..distributed import run_inspection_dask

        with progress(len(files), t("progress.inspecting")) as bar:
            results, incomplete = run_inspection_dask(
                model,
                inspector,
                files,
                out,
                address=dask_address,
                overlays=not no_overlays,
                batch_size=batch_size,
                max_pixels=max_pixels,
                parquet=parquet,
                progress=bar.update,
            )
        if on_batch is not None:
            on_batch(results)
    else:
        results, incomplete = run_inspection(
            inspector,
            files,
            out,
            overlays=not no_overlays,
            batch_size=batch_size,
            max_pixels=max_pixels,
            on_batch=on_batch,
            parquet=parquet,
        )
    report = write_report(
        out,
        results,
        threshold=inspector.threshold,
        model=f"{model} ({det!r})",
        family=inspector.family,
        incomplete=incomplete,
        lang=current_lang(),
    )
    errors = [r for r in results if r.is_error]
    flagged = [r for r in results if r.verdict == "defect"]
    for r in errors:
        click.echo(t("inspect.not_inspected", error=r.error), err=True)
    click.echo(
        t(
            "inspect.summary",
            inspected=len(results) - len(errors),
            flagged=len(flagged),
            errors=len(errors),
            csv=out / "results.csv",
            report=report,
        )
    )
    if incomplete:
        fail(t("inspect.incomplete", why=incomplete, csv=out / "results.csv"), Exit.INTERRUPTED)
    if len(errors) == len(results):
        fail(t("inspect.none_scored"), Exit.INPUT)
    if errors and strict:
        fail(t("inspect.strict", n=len(errors)), Exit.INPUT)
    if fail_on_defect and flagged:
        raise SystemExit(int(Exit.DEFECT))
    if fail_on_defect and errors and not allow_errors:
        fail(t("inspect.allow_errors", n=len(errors)), Exit.INPUT)


def _recorder(db: str | None, model: str, inspector: Any, out: Path) -> Callable[[list[Any]], Any]:
    """``--record``: each batch committed to the station database as it is produced."""
    from ..errors import GaikanError

    try:
        from ..records import RecordStore, record_results
    except ImportError as exc:
        fail(f"--record needs the station extra: pip install 'gaikan[station]' ({exc})")
    try:
        store = RecordStore(db)
        mv = store.use_model(Path(model).stem, model, threshold=inspector.threshold)
    except GaikanError as exc:
        fail(f"--record: {exc}", Exit.INPUT)
    return lambda batch: record_results(
        store, batch, model_id=mv.model_id, model_version=mv.version, overlay_root=out
    )


COMMANDS = [inspect]
