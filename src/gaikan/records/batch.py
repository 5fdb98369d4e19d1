"""Recording the results of a batch run (``gaikan inspect --record``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .store import RecordStore

__all__ = ["record_results"]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def record_results(
    store: RecordStore,
    results: Iterable[Any],
    *,
    model_id: str | None = None,
    model_version: int | None = None,
    station: str | None = None,
    client: str = "cli",
    overlay_root: str | os.PathLike | None = None,
) -> list[int]:
    """Add every :class:`~gaikan.inspection.Inspection` of a batch to ``store``.

    Parameters
    ----------
    store : RecordStore
    results : iterable of Inspection
        As :func:`gaikan.inspection.inspect_files` yields them; each
        ``file`` is read again for its digest (and kept image).
    model_id, model_version : optional
        See :meth:`RecordStore.use_model`.
    station, client : str, optional
    overlay_root : path-like, optional
        The folder the results' ``overlay`` paths are relative to (the
        inspect output folder), to keep the overlays too.

    Returns
    -------
    list of int
        The new records' ids, in order (committed in one transaction).
    """
    entries = []
    for r in results:
        overlay = None
        if overlay_root is not None and r.overlay:
            overlay = _read(Path(overlay_root) / r.overlay)
        meta = dict(station=station, client=client, model_id=model_id, model_version=model_version)
        entries.append(
            (
                r,
                dict(
                    source=str(r.file), image_bytes=_read(Path(r.file)), overlay_png=overlay, **meta
                ),
            )
        )
    return store.add_many(entries)
