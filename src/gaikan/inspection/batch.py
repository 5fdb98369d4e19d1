"""Inspecting files: load in batches, judge, draw overlays, write rows as they come.

Memory stays bounded by one batch; a bad file becomes an ``error`` row and
the rest go on; ``results.csv`` is flushed after every batch, so a run that
is interrupted keeps every row it produced.  ``results.parquet``
(:class:`ResultsParquet`, ``gaikan inspect --parquet``) holds the same rows
and columns, typed, one row group per batch.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .display import overlay_png
from .judge import Inspector
from .result import CSV_COLUMNS, Inspection

__all__ = [
    "MAX_BATCH_PIXELS",
    "PARQUET_TYPES",
    "ResultsCSV",
    "ResultsParquet",
    "folder_labeller",
    "inspect_files",
    "overlay_name",
]

#: Most image pixels loaded at once: bounds memory for line-camera frames.
MAX_BATCH_PIXELS = 32_000_000


def folder_labeller(files: Sequence[Path]) -> Callable[[Path], str | None]:
    """Ground truth from folder names, when the files are laid out that way.

    Files are labelled only when one of their parent folders is a good
    folder (``good``, ``ok``, ``normal``, ``pass``) and there is at least
    one other parent folder; a good folder's files get ``"good"``, the rest
    their folder's name.  Otherwise every label is None.
    """
    from ..io import GOOD_NAMES

    parents = {p.parent.name.lower() for p in files}
    if not (parents & GOOD_NAMES and len(parents) > 1):
        return lambda p: None
    return lambda p: "good" if p.parent.name.lower() in GOOD_NAMES else p.parent.name


def overlay_name(index: int, path: Path) -> str:
    """A safe, unique overlay file name for the ``index``-th input."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{path.parent.name}_{path.stem}")[:80]
    return f"{index:05d}_{stem}.png"


def inspect_files(
    inspector: Inspector,
    files: Sequence[Path],
    *,
    batch_size: int = 32,
    overlay_dir: Path | None = None,
    alpha: float = 0.45,
    label_of: Callable[[Path], str | None] | None = None,
    max_pixels: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[Inspection]]:
    """Inspect files batch by batch; yield each batch's results, in input order.

    Parameters
    ----------
    inspector : Inspector
    files : sequence of Path
    batch_size : int
        Images loaded and scored at once (bounds memory).
    overlay_dir : Path, optional
        Write an overlay PNG per scored image there; each result's
        ``overlay`` names it relative to ``overlay_dir``'s parent.
    alpha : float
        Opacity of the overlays' heat colours.
    label_of : callable, optional
        Ground truth of a file (see :func:`folder_labeller`).
    max_pixels : int, optional
        Largest image (in pixels, before resizing) that is decoded.
    progress : callable, optional
        Called with the number of files finished after each batch.
    """
    from ..io import load_images

    label_of = label_of or (lambda p: None)
    # large frames (tiled models): at most MAX_BATCH_PIXELS decoded pixels at once
    h, w = inspector.image_shape
    batch_size = max(1, min(batch_size, MAX_BATCH_PIXELS // max(1, h * w)))
    kw: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), max(1, batch_size)):
        chunk = list(files[start : start + max(1, batch_size)])
        batch = load_images(chunk, inspector.image_shape, resize=inspector.resize, **kw)
        bad = dict(batch.errors)
        shapes = getattr(batch, "shapes", None)
        judged = iter(
            inspector.judge(
                batch.images,
                [str(p) for p in batch.paths],
                shapes=shapes,
                labels=[label_of(p) for p in batch.paths],
                maps=overlay_dir is not None or inspector.family == "detector",
            )
            if len(batch.paths)
            else []
        )
        images = iter(batch.images)
        out: list[Inspection] = []
        for j, p in enumerate(chunk):
            if p in bad:
                out.append(Inspection.failed(str(p), bad[p], label_of(p)))
                continue
            res, img = next(judged), next(images)
            if overlay_dir is not None and res.display is not None:
                name = overlay_name(start + j, p)
                (overlay_dir / name).write_bytes(
                    overlay_png(img, res.display, inspector.threshold, alpha)
                )
                res.overlay = f"{overlay_dir.name}/{name}"
            out.append(res)
        if progress is not None:
            progress(len(chunk))
        yield out


class ResultsCSV:
    """``results.csv`` written row by row and flushed after every batch.

    Use as a context manager; :meth:`write` takes a batch of results.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self.rows = 0

    def __enter__(self) -> ResultsCSV:
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=list(CSV_COLUMNS))
        self._writer.writeheader()
        self._fh.flush()
        return self

    def write(self, results: Iterable[Inspection]) -> None:
        assert self._fh is not None, "use ResultsCSV as a context manager"
        for r in results:
            self._writer.writerow(r.to_row())
            self.rows += 1
        self._fh.flush()

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


#: Columns of ``results.parquet`` and their Arrow types: :data:`CSV_COLUMNS`
#: in the same order, numbers as numbers (a blank CSV cell is a null).
PARQUET_TYPES: dict[str, str] = {
    "file": "string",
    "verdict": "string",
    "score": "float64",
    "threshold": "float64",
    "map_max": "float64",
    "peak_row": "int64",
    "peak_col": "int64",
    "class": "string",
    "confidence": "float64",
    "error": "string",
    "folder_label": "string",
    "overlay": "string",
}


def _parquet_record(r: Inspection) -> dict[str, Any]:
    return {
        "file": r.file,
        "verdict": r.verdict,
        "score": r.score,
        "threshold": r.threshold,
        "map_max": r.map_max,
        "peak_row": r.peak_row,
        "peak_col": r.peak_col,
        "class": r.cls,
        "confidence": r.confidence,
        "error": r.error,
        "folder_label": r.label,
        "overlay": r.overlay,
    }


class ResultsParquet:
    """``results.parquet`` written batch by batch: one row group per batch.

    The same rows, in the same order, and the same columns as
    :class:`ResultsCSV` (:data:`CSV_COLUMNS`), typed (:data:`PARQUET_TYPES`):
    scores at full precision rather than the CSV's 6 significant digits,
    and nulls where the CSV has blank cells.  Use as a context manager; a
    Parquet file is readable once closed (its footer is written last), so
    ``results.csv`` remains the record of a run that is killed.

    Raises
    ------
    ImportError
        pyarrow is missing (``pip install 'gaikan[distributed]'``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._writer: Any = None
        self._schema: Any = None
        self.rows = 0

    def __enter__(self) -> ResultsParquet:
        from .._optional import require

        pa = require("pyarrow", "distributed")
        import pyarrow.parquet as pq

        self._schema = pa.schema(
            [pa.field(name, getattr(pa, PARQUET_TYPES[name])()) for name in CSV_COLUMNS]
        )
        self._writer = pq.ParquetWriter(self.path, self._schema)
        return self

    def write(self, results: Iterable[Inspection]) -> None:
        assert self._writer is not None, "use ResultsParquet as a context manager"
        import pyarrow as pa

        rows = [_parquet_record(r) for r in results]
        if not rows:
            return
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))
        self.rows += len(rows)

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
