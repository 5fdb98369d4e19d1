"""``gaikan inspect --dask``: inspection spread over a ``dask.distributed`` cluster.

:func:`inspect_files_dask` gives the same results as
:func:`gaikan.inspection.inspect_files`, batch by batch, with the batches
run on the workers of a Dask cluster:

- **The model goes once to each worker.**  Its bytes travel inside a worker
  plugin (registered under the model file's SHA-256), so every worker —
  including one that joins or is restarted mid-run — receives them once,
  verifies and loads them with :func:`gaikan.load` (checksums, no pickle)
  and keeps the model in memory for every batch it runs.  Workers need not
  see the model file; they must see the image files (shared storage), and
  the output folder when overlays are written.
- **Files are partitioned in batches** of ``batch_size``; each batch is one
  task that loads, scores and (optionally) writes overlays on the worker
  and returns only the result rows (no maps), so the client's traffic is a
  few hundred bytes per image.
- **Bad files are reported as in a local run**: the worker's
  :func:`gaikan.io.load_images` turns each unreadable file into an
  ``error`` row with the same message.
- **Results arrive as batches complete** (or in input order with
  ``ordered=True``), so ``results.csv`` grows as the run goes.  At most
  ``max_in_flight`` batches are queued at once, which bounds the scheduler's
  and the client's memory for archives of millions of files.
- **A worker killed mid-run is survived**: the scheduler re-runs the tasks
  that were on it (Dask's ``allowed-failures``, default 3, plus
  ``retries`` for tasks that raise), and since every batch is one task
  whose result the client takes exactly once, no row is lost or written
  twice.  A batch that kills its worker every time becomes ``error`` rows
  naming the problem instead of stopping the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import GaikanError, ModelFileError, ParameterError
from ..inspection import Inspection
from .cluster import _MODELS, ModelPlugin, open_client

__all__ = ["inspect_files_dask", "run_inspection_dask"]


def _inspect_batch(
    sha: str,
    start: int,
    paths: Sequence[str],
    labels: Sequence[str | None],
    threshold: float | None,
    overlay_dir: str | None,
    alpha: float,
    max_pixels: int | None,
) -> list[dict[str, Any]]:
    """Run on a worker: one batch of files → plain result dicts, in input order.

    Mirrors :func:`gaikan.inspection.inspect_files` (same loading, verdicts,
    error rows and overlay names, numbered from ``start``).
    """
    from ..inspection import Inspector, overlay_name
    from ..inspection.display import overlay_png
    from ..io import load_images

    model = _MODELS.get(sha)
    if model is None:
        raise RuntimeError(
            f"model {sha[:16]} is not loaded on this worker (its plugin did not run)"
        )
    inspector = Inspector(model, threshold)
    chunk = [Path(p) for p in paths]
    kw: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    batch = load_images(chunk, inspector.image_shape, resize=inspector.resize, **kw)
    bad = dict(batch.errors)
    label_of = dict(zip(chunk, labels))
    odir = None if overlay_dir is None else Path(overlay_dir)
    if odir is not None:
        odir.mkdir(parents=True, exist_ok=True)
    judged = iter(
        inspector.judge(
            batch.images,
            [str(p) for p in batch.paths],
            shapes=getattr(batch, "shapes", None),
            labels=[label_of[p] for p in batch.paths],
            maps=odir is not None or inspector.family == "detector",
        )
        if len(batch.paths)
        else []
    )
    images = iter(batch.images)
    out: list[dict[str, Any]] = []
    for j, p in enumerate(chunk):
        if p in bad:
            res = Inspection.failed(str(p), bad[p], label_of[p])
        else:
            res, img = next(judged), next(images)
            if odir is not None and res.display is not None:
                name = overlay_name(start + j, p)
                (odir / name).write_bytes(overlay_png(img, res.display, inspector.threshold, alpha))
                res.overlay = f"{odir.name}/{name}"
        row = asdict(res)
        row.pop("display", None)
        out.append(row)
    return out


def _killed_rows(paths: Sequence[str], labels: Sequence[str | None], exc: BaseException) -> list:
    return [
        Inspection.failed(
            p,
            f"{p}: a worker died each time it inspected this file's batch ({exc}); inspect "
            "the batch locally (without --dask) to find the file that kills it",
            lab,
        )
        for p, lab in zip(paths, labels)
    ]


def inspect_files_dask(
    model_path: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    address: Any,
    batch_size: int = 32,
    *,
    threshold: float | None = None,
    overlay_dir: str | os.PathLike | None = None,
    alpha: float = 0.45,
    label_of: Callable[[Path], str | None] | None = None,
    max_pixels: int | None = None,
    ordered: bool = False,
    retries: int = 2,
    max_in_flight: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[Inspection]]:
    """Inspect files on a Dask cluster; yield each batch's results as it completes.

    Parameters
    ----------
    model_path : path
        A gaikan model file (any kind).  Read here, sent once per worker.
    files : sequence of path
        Image files, readable by the workers under the same paths.
    address : str or distributed.Client
        See :func:`open_client` (``"local:N"``, ``"tcp://…"`` or a client).
    batch_size : int
        Files per task.
    threshold : float, optional
        Overrides the model's threshold (as :class:`gaikan.inspection.Inspector`).
    overlay_dir : path, optional
        Workers write overlay PNGs there (it must be shared with them); the
        names are those of a local run.
    alpha : float
        Overlay opacity.
    label_of : callable, optional
        Ground truth of a file (:func:`gaikan.inspection.folder_labeller`).
    max_pixels : int, optional
        Largest image decoded.
    ordered : bool
        Yield batches in input order (buffering early finishers) instead of
        as they complete.
    retries : int
        Re-runs of a batch whose task raised (a worker's death is handled
        by the scheduler separately).
    max_in_flight : int, optional
        Batches queued at once (default 4 per worker thread, at least 4).
    progress : callable, optional
        Called with the number of files finished after each batch.

    Yields
    ------
    list of Inspection
        One batch's results in the batch's input order (``display`` is None:
        maps stay on the workers).

    Raises
    ------
    ParameterError
        ``batch_size`` < 1 or a malformed address.
    gaikan.errors.ModelFileError
        The model file cannot be read (checked here before anything is
        sent), or a worker cannot load it (missing extra on the worker).
    """
    distributed = require("distributed", "distributed")
    from ..modelfile import read_model

    if int(batch_size) < 1:
        raise ParameterError(f"batch_size must be ≥ 1, got {batch_size!r}")
    bs = int(batch_size)
    read_model(model_path)  # refuse a bad file before starting anything
    data = Path(model_path).read_bytes()
    plugin = ModelPlugin(data)
    label_of = label_of or (lambda p: None)
    paths = [str(p) for p in files]
    labels = [label_of(Path(p)) for p in paths]
    starts = list(range(0, len(paths), bs))
    odir = None if overlay_dir is None else str(overlay_dir)

    client, close = open_client(address)
    futures: dict[Any, int] = {}
    try:
        try:
            client.register_plugin(plugin, name=plugin.name)
        except (GaikanError, ImportError, OSError) as exc:
            # the worker's own error, e.g. onnxruntime missing there
            raise ModelFileError(
                f"{model_path}: a worker could not load this model ({exc}); install the "
                "same gaikan version and extras on the workers"
            ) from None
        if max_in_flight is None:
            threads = sum(client.nthreads().values()) or 1
            max_in_flight = max(4, 4 * threads)
        run = uuid.uuid4().hex[:12]
        pending = iter(enumerate(starts))

        def submit_next() -> Any:
            item = next(pending, None)
            if item is None:
                return None
            i, s = item
            fut = client.submit(
                _inspect_batch,
                plugin.sha,
                s,
                paths[s : s + bs],
                labels[s : s + bs],
                threshold,
                odir,
                alpha,
                max_pixels,
                key=f"gaikan-inspect-{run}-{i}",
                pure=False,
                retries=int(retries),
            )
            futures[fut] = i
            return fut

        queue = distributed.as_completed([])
        for _ in range(int(max_in_flight)):
            fut = submit_next()
            if fut is None:
                break
            queue.add(fut)
        done: dict[int, list[Inspection]] = {}
        next_out = 0
        for fut in queue:
            i = futures.pop(fut)
            s = starts[i]
            try:
                rows = [Inspection(**r) for r in fut.result()]
            except distributed.KilledWorker as exc:
                rows = _killed_rows(paths[s : s + bs], labels[s : s + bs], exc)
            fut.release()
            nxt = submit_next()
            if nxt is not None:
                queue.add(nxt)
            if progress is not None:
                progress(len(rows))
            if not ordered:
                yield rows
                continue
            done[i] = rows
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    finally:
        if futures:
            client.cancel(list(futures))
        try:
            client.unregister_worker_plugin(plugin.name)
        except Exception:  # noqa: BLE001 - best effort: the cluster may be gone already
            pass
        close()


def run_inspection_dask(
    model_path: str | os.PathLike,
    inspector: Any,
    files: list[Path],
    out: Path,
    *,
    address: Any,
    overlays: bool = True,
    batch_size: int = 32,
    max_pixels: int | None = None,
    parquet: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Inspection], str | None]:
    """``gaikan inspect --dask``: like :func:`gaikan.cli.inspect.run_inspection`, on a cluster.

    Writes ``out/results.csv`` batch by batch as batches complete (rows of a
    batch together, batches in completion order), with ``parquet`` also
    ``out/results.parquet`` (the same rows in the same order, one row group
    per batch), and overlays into ``out/overlays`` from the workers.

    Parameters
    ----------
    model_path : path
        The model file ``inspector`` was built from.
    inspector : Inspector
        Its threshold (the model's, or ``--threshold``) is used on the workers.
    files, out, overlays, batch_size, max_pixels, parquet :
        As for ``run_inspection``.
    progress : callable, optional
        Called with the number of files each finished batch held (the CLI
        passes its progress bar's ``update``).
    address : str or distributed.Client
        ``--dask``: ``local:N`` or a scheduler address.

    Returns
    -------
    (results, incomplete)
        Every result, and why the run stopped early (None when it finished).
    """
    from ..inspection import ResultsCSV, folder_labeller
    from ..inspection.batch import ResultsParquet

    results: list[Inspection] = []
    incomplete = None
    with (
        ResultsCSV(out / "results.csv") as csv_out,
        ResultsParquet(out / "results.parquet") if parquet else nullcontext() as pq_out,
    ):
        try:
            for batch in inspect_files_dask(
                model_path,
                files,
                address,
                batch_size,
                threshold=inspector.threshold,
                overlay_dir=out / "overlays" if overlays else None,
                label_of=folder_labeller(files),
                max_pixels=max_pixels,
                progress=progress,
            ):
                csv_out.write(batch)
                if pq_out is not None:
                    pq_out.write(batch)
                results.extend(batch)
        except KeyboardInterrupt:
            incomplete = f"interrupted after {len(results)} of {len(files)} files"
    return results, incomplete
