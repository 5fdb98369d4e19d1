"""Distributed fits of the deep detectors: PaDiM (exact) and PatchCore (approximate).

Built from outside the detectors, through their feature extraction
(``_extractor``, ``_iter_embeddings``, ``_select_channels``) and scoring
helpers (``PaDiM._d2``, ``PatchCore._score_features``), so the models are
the classes' own and load, score and export as any other.

PaDiM
-----
Its per-position Gaussians are closed forms of the selected channels'
statistics: each batch task embeds its images on a worker, keeps the
features there (b × P × m float32) and returns their
:class:`~gaikan.taguchi.moments.Moments` (float64 mean and centred scatter
per position); a tree reduces them; the client regularises and whitens
(:func:`gaikan.deep.padim.whitener`), broadcasts mean and whitener once,
and each batch task turns its kept features into in-sample D² and those
into leave-one-out D² by PaDiM's closed form
(:func:`gaikan.deep.padim.loo_from_insample`).  The single-process fit
accumulates a float32 scatter around the first batch's mean; the
distributed one merges float64 scatters, so the two agree within float32
rounding (the test: 1e-4 relative on the whitened Gaussians' scores).

PatchCore (approximation)
-------------------------
A greedy k-center coreset is not a sum of per-image terms.  The
distributed fit is the usual two-level approximation: each batch's patch
features are thinned on its worker to a coreset of ratio
``min(1, 2·coreset_ratio)``, and the union of those is thinned on the
client at ratio ½ — a bank of the same size as the single-process one,
whose entries cover every partition.  Leave-one-out training scores are
taken as in the single-process fit (a seeded subset of the training images
against the bank without their own entries), on the workers.  Accuracy
against the single-process coreset: ``benchmarks/bench_dask.py --patchcore``
(docs/scale.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ImageError
from ..taguchi.moments import Moments

__all__ = ["padim_rounds", "patchcore_rounds"]

#: Deep detectors built on this (worker) process, by their parameters: the
#: backbone is loaded once per worker, not once per batch.
_DETECTORS: dict[str, Any] = {}


def _detector(kind: str, params: dict[str, Any]) -> Any:
    key = kind + json.dumps(params, sort_keys=True, default=str)
    det = _DETECTORS.get(key)
    if det is None:
        from ..detectors.registry import create

        det = _DETECTORS[key] = create(kind, **params)
    return det


def _embed_task(
    kind: str, params: dict[str, Any], paths: Sequence[str], hw: Any, max_pixels: Any
) -> dict[str, Any]:
    """Load a batch and embed it on a worker: features kept here, statistics returned."""
    torch = __import__("torch")
    from ..deep.features import num_threads
    from .fit import _load

    det = _detector(kind, params)
    X, good, errors = _load(paths, hw, max_pixels, det._input_dtype)
    out: dict[str, Any] = {"errors": errors, "paths": [good], "n": len(good)}
    if not good:
        return out
    gh, gw = det._grid_for(X.shape[1:])
    out["shape"] = tuple(int(v) for v in X.shape[1:])
    out["pix"] = Moments.of(X, "diag")
    parts = []
    with num_threads(det.num_threads), torch.inference_mode():
        for e in det._iter_embeddings(X):
            b, c = e.shape[:2]
            if kind == "padim":
                sel = torch.from_numpy(det._select_channels(c, det.n_features))
                f = e[:, sel].reshape(b, len(sel), gh * gw).permute(0, 2, 1)
            else:  # patchcore: (b·P, C) rows as its memory bank holds them
                f = e.permute(0, 2, 3, 1).reshape(b, gh * gw, c)
            parts.append(f.contiguous().numpy().astype(np.float32, copy=False))
    out["feats"] = np.concatenate(parts)  # (b, P, m)
    return out


def _stats(kept: dict[str, Any], outer: bool = True) -> dict[str, Any]:
    """The small part of a batch's result: everything but its features (and their statistics)."""
    out = {k: v for k, v in kept.items() if k != "feats"}
    if outer and "feats" in kept:
        out["mom"] = Moments.of(kept["feats"], "outer")
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from .fit import _merge_opt

    if a.get("shape") and b.get("shape") and a["shape"] != b["shape"]:
        raise ImageError(
            "good images",
            f"of different sizes: {a['shape']} and {b['shape']}",
            "give --size to load them at one size",
        )
    out = {
        "errors": a["errors"] + b["errors"],
        "paths": a["paths"] + b["paths"],
        "n": a["n"] + b["n"],
        "shape": a.get("shape") or b.get("shape"),
        "pix": _merge_opt(a.get("pix"), b.get("pix")),
    }
    if "mom" in a or "mom" in b:
        out["mom"] = _merge_opt(a.get("mom"), b.get("mom"))
    return out


def _padim_loo_task(
    params: dict[str, Any], kept: dict[str, Any], gaussians: tuple[Any, ...], n: int
) -> np.ndarray:
    from ..deep.padim import loo_from_insample

    if "feats" not in kept:
        return np.empty(0)
    det = _detector("padim", params)
    mean, whiten, grid = gaussians
    det.mean_, det.whiten_ = mean, whiten
    f = kept["feats"]
    insample = np.concatenate([det._d2(f[j : j + 64]) for j in range(0, f.shape[0], 64)])
    loo = loo_from_insample(insample, n, mean.shape[-1]).reshape(f.shape[0], *grid)
    loo = det._smooth(loo, det.grid_sigma)
    return loo.reshape(loo.shape[0], -1).max(axis=1)


def _submit_embed(client, kind, params, parts, hw, max_pixels, retries, run) -> list[Any]:
    return [
        client.submit(
            _embed_task,
            kind,
            params,
            part,
            hw,
            max_pixels,
            key=f"gaikan-fit-embed-{run}-{i}",
            pure=False,
            retries=int(retries),
        )
        for i, part in enumerate(parts)
    ]


def padim_rounds(
    client: Any,
    det: Any,
    parts: list[list[str]],
    hw: Any,
    max_pixels: int | None,
    retries: int,
    progress: Callable[[int], None] | None,
    run: str,
) -> Any:
    """PaDiM's distributed fit on ``client`` (see the module notes); returns a DaskFit."""
    from ..deep.padim import whitener
    from ..detectors.base import MIN_UNIT_SPACE
    from ..taguchi.mt import regularise_covariance
    from .fit import DaskFit, _finish, tree_reduce

    params = det.get_params()
    kept = _submit_embed(client, "padim", params, parts, hw, max_pixels, retries, run)
    small = [
        client.submit(_stats, k, key=f"gaikan-fit-stats-{run}-{i}") for i, k in enumerate(kept)
    ]
    total = tree_reduce(client, small, _merge, f"gaikan-fit-merge-{run}").result()
    n = int(total["n"])
    if n < MIN_UNIT_SPACE:
        raise ImageError(
            "good images", f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {n}"
        )
    shape = tuple(total["shape"])
    mom: Moments = total["mom"]
    P, m = mom.mean.shape
    wh = np.empty((P, m, m), dtype=np.float32)
    step = max(1, (32 << 20) // (m * m * 8))
    cov = mom.covariance()
    for p0 in range(0, P, step):
        wh[p0 : p0 + step] = whitener(
            regularise_covariance(cov[p0 : p0 + step], det.reg_rel, det.reg_abs)
        )
    fe = det._extractor()
    det.channels_ = det._select_channels(sum(fe.channels), det.n_features)
    det.mean_ = mom.mean.astype(np.float32)
    det.whiten_ = wh
    det.image_shape_ = shape
    grid = det.grid_shape_
    [g_fut] = client.scatter([(det.mean_, det.whiten_, grid)], broadcast=True)
    loo = [
        client.submit(
            _padim_loo_task, params, k, g_fut, n, key=f"gaikan-fit-loo-{run}-{i}", pure=False
        )
        for i, k in enumerate(kept)
    ]
    scores = []
    for part, fut in zip(parts, loo):
        scores.append(fut.result())
        if progress is not None:
            progress(len(part))
    pix: Moments = total["pix"]
    det.pixel_mean_ = pix.mean
    det.pixel_std_ = np.sqrt(pix.covariance())
    _finish(det, n, shape, np.concatenate(scores))
    return DaskFit(det, [p for g in total["paths"] for p in g], list(total["errors"]))


def _coreset_task(
    params: dict[str, Any], kept: dict[str, Any], ratio: float, salt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-partition coreset of a batch's patches: (rows float32, local patch indices)."""
    from ..deep.coreset import greedy_coreset

    if "feats" not in kept:
        return np.empty((0, 0), np.float32), np.empty(0, np.int64)
    det = _detector("patchcore", params)
    f = kept["feats"]
    rows = f.reshape(-1, f.shape[-1])
    keep = greedy_coreset(
        rows,
        ratio,
        projection_dim=int(det.projection_dim),
        block=int(det.coreset_block),
        random_state=int(det.random_state) + salt,
    )
    return rows[keep].astype(np.float16), keep


def _patchcore_loo_task(
    params: dict[str, Any], kept: dict[str, Any], bank: Any, local: Sequence[int], first: int
) -> np.ndarray:
    """Leave-one-out grids of some of a batch's images (their own bank entries excluded)."""
    torch = __import__("torch")
    from ..deep.features import num_threads

    det = _detector("patchcore", params)
    bank_rows, source = bank
    det.bank_ = bank_rows
    det._drop_caches()
    b = det._bank_tensor()
    f = kept["feats"]
    out = []
    with num_threads(det.num_threads), torch.inference_mode():
        for t in local:
            mask = torch.from_numpy(source == first + int(t))
            x = torch.from_numpy(np.ascontiguousarray(f[t], dtype=np.float32))
            out.append(det._score_features(x[None], b, exclude=mask)[0])
    return np.asarray(out)


def patchcore_rounds(
    client: Any,
    det: Any,
    parts: list[list[str]],
    hw: Any,
    max_pixels: int | None,
    retries: int,
    progress: Callable[[int], None] | None,
    run: str,
) -> Any:
    """PatchCore's approximate distributed fit (per-partition coresets, then one of their union)."""
    from ..deep.coreset import greedy_coreset
    from ..detectors.base import MIN_UNIT_SPACE
    from .fit import DaskFit, _finish, tree_reduce

    params = det.get_params()
    kept = _submit_embed(client, "patchcore", params, parts, hw, max_pixels, retries, run)
    small = [
        client.submit(_stats, k, False, key=f"gaikan-fit-stats-{run}-{i}")
        for i, k in enumerate(kept)
    ]
    total = tree_reduce(client, small, _merge, f"gaikan-fit-merge-{run}").result()
    n = int(total["n"])
    if n < MIN_UNIT_SPACE:
        raise ImageError(
            "good images", f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {n}"
        )
    counts = [len(g) for g in total["paths"]]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    ratio1 = min(1.0, 2.0 * float(det.coreset_ratio))
    cores = [
        client.submit(_coreset_task, params, k, ratio1, i, key=f"gaikan-fit-core-{run}-{i}")
        for i, k in enumerate(kept)
    ]
    shape = tuple(total["shape"])
    det.image_shape_ = shape
    gh, gw = det.grid_shape_
    P = gh * gw
    rows, source = [], []
    for fut, first in zip(cores, firsts):
        r, idx = fut.result()
        if len(idx):
            rows.append(r)
            source.append(first + idx // P)
    union = np.concatenate(rows)
    src = np.concatenate(source)
    keep = greedy_coreset(
        union,
        0.5 if ratio1 < 1.0 else float(det.coreset_ratio),
        projection_dim=int(det.projection_dim),
        block=int(det.coreset_block),
        random_state=det.random_state,
    )
    bank = union[keep]
    det.bank_ = bank if det.bank_dtype == "float16" else bank.astype(np.float32)
    bank_src = src[keep]
    rng = np.random.default_rng(det.random_state)
    m = min(n, max(1, int(det.n_threshold_images)))
    chosen = np.sort(rng.choice(n, size=m, replace=False))
    [b_fut] = client.scatter([(det.bank_, bank_src)], broadcast=True)
    loo_futs = []
    for i, (k, first, cnt) in enumerate(zip(kept, firsts, counts)):
        local = [int(t - first) for t in chosen if first <= t < first + cnt]
        if local:
            loo_futs.append(
                client.submit(
                    _patchcore_loo_task, params, k, b_fut, local, int(first),
                    key=f"gaikan-fit-loo-{run}-{i}", pure=False,
                )
            )  # fmt: skip
    grids = [np.asarray(f.result()).reshape(-1, gh, gw) for f in loo_futs]
    if progress is not None:
        progress(n)
    pix: Moments = total["pix"]
    det.pixel_mean_ = pix.mean
    det.pixel_std_ = np.sqrt(pix.covariance())
    det._drop_caches()
    loo = np.concatenate(grids)
    _finish(det, n, shape, loo.reshape(loo.shape[0], -1).max(axis=1))
    return DaskFit(det, [p for g in total["paths"] for p in g], list(total["errors"]))
