"""Benchmark orchestration behind ``gaikan bench``: datasets, timing,
memory, accuracy tables.  No maths beyond calling detectors and metrics.

Each detector runs in its own freshly spawned process, which loads the
dataset itself, so the reported peak RSS is that of a process doing only
that job (dataset in memory included) and detectors cannot disturb each
other's numbers.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = ["BenchData", "format_table", "load_bench_data", "run_bench", "run_one"]


@dataclass
class BenchData:
    """A benchmark dataset in memory.

    Attributes
    ----------
    name : str
    train : ndarray, shape (n, H, W)
    test : ndarray, shape (m, H, W)
    labels : ndarray of int, shape (m,)
    types : list of str
        Defect type per test image ("good" for good ones).
    masks : ndarray of bool, shape (m, H, W), or None
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    types: list[str]
    masks: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def load_bench_data(dataset: str, size: int | tuple[int, int], seed: int = 0) -> BenchData:
    """Load ``"elpv"``, ``"elpv-mono"``, ``"elpv-poly"``, ``"connectors[:view]"`` or an
    MVTec AD folder."""
    if dataset.startswith("elpv"):
        from .datasets import elpv_split, load_elpv

        cell = {"elpv": None, "elpv-mono": "mono", "elpv-poly": "poly"}.get(dataset, "?")
        if cell == "?":
            raise ParameterError(f"unknown ELPV variant {dataset!r}")
        d = load_elpv(size=size, cell_type=cell)
        tr, te = elpv_split(d.probs, seed=seed)
        types = ["good" if p == 0 else f"p={p:.2f}" for p in d.probs[te]]
        return BenchData(dataset, d.images[tr], d.images[te], d.labels[te], types)
    if dataset.startswith("connectors"):
        _, _, view = dataset.partition(":")
        root = connectors_path(seed=seed, size=size) / (view or "oblique")
        return _from_mvtec(root, f"{dataset}", size)
    return _from_mvtec(Path(dataset), str(dataset), size)


def connectors_path(seed: int = 0, size=128, cache: str | os.PathLike | None = None) -> Path:
    """Render (once, then reuse) the benchmark's synthetic connector set.

    The set follows issue 3's protocol: mixed layout, 200 good images for
    the unit space, 50 test goods and 20 per defect mode, both views.  It
    is cached under ``$GAIKAN_CACHE`` (default ``~/.cache/gaikan``) keyed
    by seed and size; same seed → byte-identical files.
    """
    from .io import normalize_size
    from .synth import make_dataset

    hw = normalize_size(size) or (128, 128)
    base = Path(cache or os.environ.get("GAIKAN_CACHE") or Path.home() / ".cache" / "gaikan")
    root = base / f"connectors-s{seed}-{hw[0]}x{hw[1]}"
    if not (root / ".complete").exists():
        make_dataset(
            root,
            layout="mixed",
            n_good=200,
            n_test_good=50,
            n_defect=20,
            size=hw[0],
            seed=seed,
            workers=min(2, os.cpu_count() or 1),
        )
        (root / ".complete").write_text("ok")
    return root


def _from_mvtec(root: Path, name: str, size) -> BenchData:
    from .io import load_mvtec

    d = load_mvtec(root, size)
    return BenchData(
        name,
        d.train.images,
        d.test.images,
        d.labels,
        d.test_types,
        d.masks if d.has_masks else None,
    )


def _status_mb(field_name: str) -> float | None:
    """A ``/proc/self/status`` memory field in MB (None where there is no such file)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` carries over the
    peak of the process a child was forked from (across ``exec``), so a
    benchmark child spawned by a parent holding a data set reported the
    parent's memory as its own.
    """
    mb = _status_mb("VmHWM")
    return mb if mb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float | None:
    """This process's resident memory now, MB (``VmRSS``; None off Linux)."""
    return _status_mb("VmRSS")


def run_one(
    dataset: str, size, kind: str, params: dict[str, Any], seed: int = 0, batch_size: int = 16
) -> dict[str, Any]:
    """Fit and evaluate one detector; return a row of numbers."""
    from .detectors.registry import create
    from .metrics import pixel_aupro, pixel_roc_auc, roc_auc

    data = load_bench_data(dataset, size, seed)
    det = create(kind, **params)
    t0 = time.perf_counter()
    det.fit(data.train)
    fit_s = time.perf_counter() - t0
    det.detect(data.test[:batch_size])  # warm-up (JIT, caches)
    t0 = time.perf_counter()
    parts, maps = [], []
    for i in range(0, len(data.test), batch_size):
        res = det.detect(data.test[i : i + batch_size])
        parts.append(res.scores)
        if data.masks is not None:
            maps.append(res.maps.astype(np.float32))
    score_s = time.perf_counter() - t0
    scores = np.concatenate(parts)
    row: dict[str, Any] = {
        "dataset": data.name,
        "detector": kind,
        "params": params,
        "n_train": len(data.train),
        "n_test": len(data.test),
        "image_auroc": roc_auc(data.labels, scores),
        "fit_s": fit_s,
        "ms_per_img": 1e3 * score_s / len(data.test),
        "peak_rss_mb": peak_rss_mb(),
        "flagged_good": float(np.mean(scores[data.labels == 0] > det.threshold_)),
    }
    types = np.array(data.types)
    good = types == "good"
    per_type = {}
    all_maps = np.concatenate(maps) if maps else None
    for t in sorted(set(data.types) - {"good"}):
        sel = good | (types == t)
        entry = {
            "image_auroc": roc_auc(data.labels[sel], scores[sel]),
            "n": int((types == t).sum()),
        }
        if all_maps is not None and data.masks is not None:  # this type's images + the good
            entry["pixel_auroc"] = pixel_roc_auc(data.masks[sel], all_maps[sel])
        per_type[t] = entry
    if all_maps is not None and data.masks is not None:
        row["pixel_auroc"] = pixel_roc_auc(data.masks, all_maps)
        row["pixel_aupro"] = pixel_aupro(data.masks, all_maps)
    row["per_type"] = per_type
    return row


def _child(queue, args) -> None:
    try:
        queue.put(("ok", run_one(*args)))
    except BaseException as exc:  # noqa: BLE001 - report, never hang the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_bench(
    dataset: str,
    detectors: list[tuple[str, dict[str, Any]]],
    size,
    seed: int = 0,
    batch_size: int = 16,
    isolate: bool = True,
) -> list[dict[str, Any]]:
    """Run each detector (in its own process when ``isolate``)."""
    import multiprocessing as mp

    rows = []
    for kind, params in detectors:
        args = (dataset, size, kind, params, seed, batch_size)
        if not isolate:
            rows.append(run_one(*args))
            continue
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=_child, args=(q, args))
        proc.start()
        status, payload = q.get()
        proc.join()
        if status == "ok":
            rows.append(payload)
        else:
            rows.append({"dataset": dataset, "detector": kind, "params": params, "error": payload})
    return rows


def format_table(rows: list[dict[str, Any]], per_type: bool = True) -> str:
    """Plain-text table of benchmark rows."""
    head = (
        f"{'row':<4} {'detector':<12} {'params':<28} {'img AUROC':>9} {'px AUROC':>9} {'AUPRO':>6} {'fit s':>7} "
        f"{'ms/img':>8} {'RSS MB':>7} {'good flagged':>12}"
    )
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows, 1):
        ps = ",".join(f"{k}={v}" for k, v in r.get("params", {}).items())[:28]
        if "error" in r:
            lines.append(f"{i:<4} {r['detector']:<12} {ps:<28} error: {r['error']}")
            continue
        px = f"{r['pixel_auroc']:.4f}" if "pixel_auroc" in r else "-"
        pro = f"{r['pixel_aupro']:.3f}" if "pixel_aupro" in r else "-"
        lines.append(
            f"{i:<4} {r['detector']:<12} {ps:<28} {r['image_auroc']:>9.4f} {px:>9} {pro:>6} "
            f"{r['fit_s']:>7.2f} "
            f"{r['ms_per_img']:>8.2f} {r['peak_rss_mb']:>7.0f} {100 * r['flagged_good']:>11.1f}%"
        )
    if per_type and any(r.get("per_type") for r in rows):
        lines += [
            "",
            "per defect type (its images against the good ones; pixel AUROC over both)",
            f"{'row':<4} {'detector':<12} {'defect type':<14} {'n':>4} {'img AUROC':>9} {'px AUROC':>9}",
        ]
        for i, r in enumerate(rows, 1):
            for t, e in (r.get("per_type") or {}).items():
                px = f"{e['pixel_auroc']:.4f}" if "pixel_auroc" in e else "-"
                lines.append(
                    f"{i:<4} {r['detector']:<12} {t:<14} {e['n']:>4} {e['image_auroc']:>9.4f} {px:>9}"
                )
    return "\n".join(lines)


def threads_note() -> str:
    """Thread settings in force (for benchmark headers)."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    return ", ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ) or "threads: default"
