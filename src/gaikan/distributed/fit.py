"""``gaikan fit --dask``: closed-form fits from statistics computed on a cluster.

Every closed-form fit of gaikan is a function of sums over the good images
(:class:`gaikan.taguchi.moments.Moments`: count, mean, centred scatter,
merged exactly pairwise), so the workers compute the statistics of their
batches of files and the cluster reduces them in a binary tree — the
images, their features and their Gram matrices never leave the worker that
loaded them; what crosses the network is a few statistics per batch.

Rounds (:class:`gaikan.detectors.base.ClosedFormDetector` for SOARTC,
SOART3Map and RT):

1. **reference**: each batch task loads its files and returns the pixel
   statistics and the stage-1 reference statistics (SOARTC: the mean
   self-similarity matrix; RT, SOART3Map: the mean patches); a tree of
   merge tasks reduces them.
2. **features**: each batch task loads its files again (images are not held
   between rounds: a 10,000-image unit space would pin 800 MB of float64
   on the workers) and computes every image's stage-1 features and its
   leave-one-out features against the merged reference; it keeps them on
   its worker and a tree reduces their per-position statistics into the
   MT Gaussians.
3. **leave-one-out**: each batch task scores its kept features against the
   Gaussian fitted without each image (closed form from the merged
   scatter) and returns one number per image: the training scores the
   threshold is the quantile of.

PaDiM (:mod:`gaikan.distributed.padim`) is the same with a backbone: its
per-position Gaussians are the merged statistics of the selected feature
channels, and its leave-one-out scores follow in closed form from the
in-sample ones.  The result equals the single-process fit within float
tolerance (``tests/test_distributed_fit.py``).

A worker lost mid-fit costs only its tasks: the scheduler re-runs them
(their inputs are file names and merged statistics), so the fit completes
with the same result.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._optional import require
from ..errors import GaikanError, ImageError, ParameterError
from ..taguchi.moments import Moments
from .cluster import open_client

__all__ = [
    "DASK_FIT_KINDS",
    "DaskFit",
    "fit_batches",
    "fit_files_dask",
    "fit_files_serial",
    "tree_reduce",
]

#: Kinds ``gaikan fit --dask`` fits: closed forms of per-image statistics
#: (equal to the single-process fit), and PatchCore's documented approximation.
DASK_FIT_KINDS = ("soartc", "soart3map", "rt", "padim", "patchcore")
_CLOSED_FORM = ("soartc", "soart3map", "rt")


@dataclass
class DaskFit:
    """What :func:`fit_files_dask` returns.

    Attributes
    ----------
    detector : BaseDetector
        The fitted detector (as ``detector.fit`` on the readable images).
    paths : list of str
        The files of the unit space, in input order (``train_scores_``'s order).
    errors : list of (str, str)
        Unreadable files and why (left out, as ``gaikan fit`` skips them).
    """

    detector: Any
    paths: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


# -- worker side ------------------------------------------------------------------
def _worker_detector(kind: str, params: dict[str, Any], shape: tuple[int, int] | None) -> Any:
    from ..detectors.registry import create

    det = create(kind, **params)
    if shape is not None:
        det.image_shape_ = tuple(shape)
    return det


def _load(
    paths: Sequence[str], hw: tuple[int, int] | None, max_pixels: int | None, dtype: Any
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    from .._validation import check_images
    from ..io import load_images

    kw: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    batch = load_images([os.fspath(p) for p in paths], hw, **kw)
    errors = [(str(p), str(m)) for p, m in batch.errors]
    good = [str(p) for p in batch.paths]
    if not good:
        return np.empty((0, 0, 0)), good, errors
    return check_images(batch.images, dtype=dtype), good, errors


def _reference_task(
    kind: str, params: dict[str, Any], paths: Sequence[str], hw: Any, max_pixels: Any
) -> dict[str, Any]:
    """Round 1 on a worker: pixel and stage-1 reference statistics of one batch."""
    det = _worker_detector(kind, params, None)
    X, good, errors = _load(paths, hw, max_pixels, det._input_dtype)
    out: dict[str, Any] = {"pix": None, "ref": None, "errors": errors, "paths": [good]}
    if good:
        out["pix"] = det._pixel_moments(X)
        out["ref"] = det._reference_moments(X)
        out["shape"] = tuple(int(v) for v in X.shape[1:])
    return out


def _merge_opt(a: Moments | None, b: Moments | None) -> Moments | None:
    if a is None:
        return b
    if b is None:
        return a
    return a.merge(b)


def _merge_reference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Tree node of round 1: merged statistics, errors and the unit space's files, in order."""
    shape = a.get("shape") or b.get("shape")
    if a.get("shape") and b.get("shape") and a["shape"] != b["shape"]:
        raise ImageError(
            "good images",
            f"of different sizes: {a['shape']} and {b['shape']}",
            "give --size to load them at one size",
        )
    return {
        "pix": _merge_opt(a["pix"], b["pix"]),
        "ref": _merge_opt(a["ref"], b["ref"]),
        "errors": a["errors"] + b["errors"],
        "paths": a["paths"] + b["paths"],
        "shape": shape,
    }


def _slim(reference: dict[str, Any]) -> dict[str, Any]:
    """What round 2 needs of round 1's result (not the file lists, which grow with the archive)."""
    return {"ref": reference["ref"], "shape": reference["shape"]}


def _features_task(
    kind: str,
    params: dict[str, Any],
    paths: Sequence[str],
    hw: Any,
    max_pixels: Any,
    reference: dict[str, Any],
) -> tuple[Moments | None, np.ndarray | None, np.ndarray | None]:
    """Round 2 on a worker: a batch's features, kept here, and their statistics."""
    det = _worker_detector(kind, params, reference["shape"])
    det._set_reference(reference["ref"])
    X, good, _ = _load(paths, hw, max_pixels, det._input_dtype)
    if not good:
        return None, None, None
    feats, loo = det._fit_features(X, reference["ref"].n)
    return det._stage2_moments(feats), feats, loo


def _first(t: tuple[Any, ...]) -> Any:
    return t[0]


def _loo_task(
    kind: str,
    params: dict[str, Any],
    shape: tuple[int, int],
    kept: tuple[Moments | None, np.ndarray | None, np.ndarray | None],
    stage2: Moments,
) -> np.ndarray:
    """Round 3 on a worker: leave-one-out image scores of a batch's kept features."""
    _, feats, loo = kept
    if feats is None or loo is None:
        return np.empty(0)
    det = _worker_detector(kind, params, shape)
    grid = det._loo_grid(feats, loo, stage2)
    return grid.reshape(grid.shape[0], -1).max(axis=1)


# -- client side ------------------------------------------------------------------
def tree_reduce(client: Any, futures: list[Any], merge: Callable[[Any, Any], Any], key: str) -> Any:
    """Reduce futures pairwise on the cluster (a binary tree of merge tasks).

    Each level halves the number of partial results, so no process ever
    holds more than two of them and the depth is ⌈log₂ batches⌉; the
    scheduler runs each merge where one of its inputs already is.

    Returns
    -------
    Future
        The future of the single merged result (left on the cluster).
    """
    level = list(futures)
    depth = 0
    while len(level) > 1:
        nxt = [
            client.submit(merge, level[i], level[i + 1], key=f"{key}-{depth}-{i // 2}")
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def _check_kind(det: Any) -> str:
    kind = getattr(det, "kind", "")
    if kind not in DASK_FIT_KINDS:
        raise ParameterError(
            f"detector {kind or type(det).__name__!r} has no distributed fit (--dask); the kinds "
            f"that have one are {', '.join(DASK_FIT_KINDS)} (fit {kind or 'it'} without --dask)"
        )
    return str(kind)


def _finish(det: Any, n: int, shape: tuple[int, int], scores: np.ndarray) -> None:
    """The common tail of ``BaseDetector.fit``: counts, training scores, threshold."""
    det.image_shape_ = (int(shape[0]), int(shape[1]))
    det.n_train_ = int(n)
    det.train_scores_ = np.asarray(scores, dtype=np.float64)
    if det.threshold is not None:
        det.set_threshold(float(det.threshold))
    else:
        det.set_threshold(float(np.quantile(det.train_scores_, det.threshold_quantile)))


def fit_files_dask(
    detector: Any,
    files: Sequence[str | os.PathLike],
    address: Any,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    max_pixels: int | None = None,
    retries: int = 2,
    progress: Callable[[int], None] | None = None,
) -> DaskFit:
    """Fit ``detector`` on good image files, the statistics computed on a Dask cluster.

    Parameters
    ----------
    detector : BaseDetector
        An unfitted detector of a kind in :data:`DASK_FIT_KINDS` (its
        parameters are sent to the workers, never the object).
    files : sequence of path
        Good image files, readable by the workers under the same paths.
    address : str or distributed.Client
        ``"local:N"``, a scheduler address or a client (:func:`open_client`).
    size : (int, int), optional
        (H, W) the images are loaded at (the CLI's ``--size``).
    batch_size : int
        Files per task.
    max_pixels : int, optional
        Largest image decoded.
    retries : int
        Re-runs of a task that raised.
    progress : callable, optional
        Called with a number of files after each batch of the last round.

    Returns
    -------
    DaskFit
        The fitted detector, the unit space's files and the unreadable ones.

    Raises
    ------
    ParameterError
        A kind without a distributed fit (the message lists those with
        one), a bad parameter, or ``batch_size`` < 1.
    ImageError
        Fewer than 5 readable images, or images of different sizes.
    """
    from .._validation import validate_params
    from ..detectors.base import MIN_UNIT_SPACE

    kind = _check_kind(detector)
    validate_params(detector)
    detector._drop_caches()
    if int(batch_size) < 1:
        raise ParameterError(f"batch_size must be ≥ 1, got {batch_size!r}")
    bs = int(batch_size)
    if size is not None and kind in _CLOSED_FORM:
        detector._check_grid((int(size[0]), int(size[1])))
    paths = [os.fspath(p) for p in files]
    if not paths:
        raise ImageError("good images", "no image files to fit on")
    parts = [paths[s : s + bs] for s in range(0, len(paths), bs)]
    params = detector.get_params()
    hw = None if size is None else (int(size[0]), int(size[1]))
    client, close = open_client(address)
    run = uuid.uuid4().hex[:12]
    try:
        if kind in ("padim", "patchcore"):
            from . import padim

            rounds = padim.padim_rounds if kind == "padim" else padim.patchcore_rounds
            return rounds(client, detector, parts, hw, max_pixels, retries, progress, run)
        opts: dict[str, Any] = {"pure": False, "retries": int(retries)}
        ref_parts = [
            client.submit(
                _reference_task, kind, params, part, hw, max_pixels,
                key=f"gaikan-fit-ref-{run}-{i}", **opts,
            )
            for i, part in enumerate(parts)
        ]  # fmt: skip
        ref_fut = tree_reduce(client, ref_parts, _merge_reference, f"gaikan-fit-refmerge-{run}")
        reference = ref_fut.result()
        del ref_parts
        n = 0 if reference["pix"] is None else reference["pix"].n
        errors = list(reference["errors"])
        if n < MIN_UNIT_SPACE:
            raise ImageError(
                "good images",
                f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {n} readable "
                f"of {len(paths)} files",
            )
        shape = tuple(reference["shape"])
        detector._check_grid(shape)
        slim = client.submit(_slim, ref_fut, key=f"gaikan-fit-slim-{run}")
        kept = [
            client.submit(
                _features_task, kind, params, part, hw, max_pixels, slim,
                key=f"gaikan-fit-feat-{run}-{i}", **opts,
            )
            for i, part in enumerate(parts)
        ]  # fmt: skip
        moms = [
            client.submit(_first, k, key=f"gaikan-fit-mom-{run}-{i}") for i, k in enumerate(kept)
        ]
        st_fut = tree_reduce(client, moms, _merge_opt, f"gaikan-fit-mommerge-{run}")
        loo_futs = [
            client.submit(
                _loo_task, kind, params, shape, k, st_fut,
                key=f"gaikan-fit-loo-{run}-{i}", **opts,
            )
            for i, k in enumerate(kept)
        ]  # fmt: skip
        stage2 = st_fut.result()
        scores = []
        for part, fut in zip(parts, loo_futs):
            scores.append(fut.result())
            if progress is not None:
                progress(len(part))
        detector.image_shape_ = shape
        detector._set_pixels(reference["pix"])
        detector._set_reference(reference["ref"])
        detector._set_stage2(stage2)
        _finish(detector, n, shape, np.concatenate(scores))
        good = [p for group in reference["paths"] for p in group]
        return DaskFit(detector, good, errors)
    except GaikanError:
        raise
    except Exception as exc:
        distributed = require("distributed", "distributed")
        if isinstance(exc, distributed.KilledWorker):
            raise ImageError(
                "--dask",
                f"a worker died each time it ran a batch of the fit ({exc})",
                "fit without --dask to find the file that kills it",
            ) from None
        raise
    finally:
        close()


def fit_batches(detector: Any, batches: Sequence[np.ndarray]) -> Any:
    """The distributed fit's rounds run here, on in-memory batches (no cluster).

    The same per-batch statistics and merges as :func:`fit_files_dask`
    (merged as a balanced tree), for checking the maths and for fitting a
    unit space too large to hold at once from a generator of batches.

    Parameters
    ----------
    detector : SOARTC, SOART3Map or RTDetector
        Unfitted.
    batches : sequence of ndarray, each (b, H, W)
        The good images, batch by batch (iterated twice).

    Returns
    -------
    The fitted detector.
    """
    from .._validation import check_images, validate_params
    from ..detectors.base import MIN_UNIT_SPACE
    from ..taguchi.moments import merge_all

    kind = _check_kind(detector)
    if kind not in _CLOSED_FORM:
        raise ParameterError(f"fit_batches fits {', '.join(_CLOSED_FORM)}, not {kind!r}")
    validate_params(detector)
    detector._drop_caches()
    xs = [check_images(b, dtype=detector._input_dtype) for b in batches]
    n = sum(x.shape[0] for x in xs)
    if n < MIN_UNIT_SPACE:
        raise ParameterError(f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {n}")
    shape = (int(xs[0].shape[1]), int(xs[0].shape[2]))
    detector._check_grid(shape)
    detector.image_shape_ = shape
    detector._set_pixels(merge_all([detector._pixel_moments(x) for x in xs]))
    detector._set_reference(merge_all([detector._reference_moments(x) for x in xs]))
    kept = [detector._fit_features(x, n) for x in xs]
    stage2 = merge_all([detector._stage2_moments(f) for f, _ in kept])
    detector._set_stage2(stage2)
    grids = [detector._loo_grid(f, g, stage2) for f, g in kept]
    _finish(detector, n, shape, np.concatenate([g.reshape(g.shape[0], -1).max(1) for g in grids]))
    return detector


def fit_files_serial(
    detector: Any,
    files: Sequence[str | os.PathLike],
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 32,
    max_pixels: int | None = None,
) -> DaskFit:
    """:func:`fit_files_dask`'s rounds in this process, one batch at a time (no cluster).

    The same tasks and merges (a balanced tree), so memory is bounded by one
    batch of images plus every image's features (SOARTC at 100×100: 17 KB
    per image), where ``detector.fit`` on all images at once holds their
    patches (SOARTC at 100×100: 290 KB per image).  The baseline of
    ``benchmarks/bench_dask.py --fit`` (closed-form kinds only).
    """
    from ..detectors.base import MIN_UNIT_SPACE
    from ..taguchi.moments import merge_all

    kind = _check_kind(detector)
    if kind not in _CLOSED_FORM:
        raise ParameterError(f"fit_files_serial fits {', '.join(_CLOSED_FORM)}, not {kind!r}")
    detector._drop_caches()
    params = detector.get_params()
    paths = [os.fspath(p) for p in files]
    parts = [paths[s : s + int(batch_size)] for s in range(0, len(paths), int(batch_size))]
    refs = [_reference_task(kind, params, part, size, max_pixels) for part in parts]
    level = refs
    while len(level) > 1:
        nxt = [_merge_reference(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    reference = level[0]
    n = 0 if reference["pix"] is None else reference["pix"].n
    if n < MIN_UNIT_SPACE:
        raise ImageError(
            "good images", f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {n}"
        )
    shape = tuple(reference["shape"])
    kept = [_features_task(kind, params, part, size, max_pixels, reference) for part in parts]
    stage2 = merge_all([k[0] for k in kept if k[0] is not None])
    scores = [_loo_task(kind, params, shape, k, stage2) for k in kept]
    detector.image_shape_ = shape
    detector._set_pixels(reference["pix"])
    detector._set_reference(reference["ref"])
    detector._set_stage2(stage2)
    _finish(detector, n, shape, np.concatenate(scores))
    return DaskFit(detector, [p for g in reference["paths"] for p in g], list(reference["errors"]))
