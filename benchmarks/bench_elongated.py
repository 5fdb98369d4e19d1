"""Hairline defects on elongated parts: a square resize against tiles at full resolution.

    python benchmarks/bench_elongated.py            # both parts of ELONGATED (~5 min)
    python benchmarks/bench_elongated.py --quick    # fewer images, one part
    python benchmarks/bench_elongated.py --auto     # what --detector auto picks (~4 min)

The parts are :data:`gaikan.synth.textures.ELONGATED` (brushed and grained
surfaces of 512 × 1280 with cracks and scratches 1–2 px wide): 40 good
parts to fit, 20 good + 20 defective (10 cracks, 10 scratches) to test.
Each detector is fitted and scored twice: on the parts stretched to a
square (what a square-input peer, or ``gaikan fit`` without ``--tile``,
sees) and tile by tile at full resolution (``gaikan fit --tile``).  The
table gives image AUROC, the seconds for fit + scoring on 2 threads and
the process's peak RSS so far (a high-water mark: rows only raise it).
With ``--auto``: :func:`gaikan.autoselect.select` on the good parts (at
their own size, ``--budget`` seconds), its pick scored on the test parts.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")

#: (label, registry kind, parameters, geometry): geometry is ("square", side) or
#: ("tiles", tile, overlap, per_position).
CONFIGS = (
    ("padim, stretched to 256²", "padim", {}, ("square", 256)),
    ("padim, 256-px tiles, a unit space per position", "padim", {}, ("tiles", 256, 32, True)),
    ("padim, 256-px tiles, one unit space", "padim", {}, ("tiles", 256, 32, False)),
    ("rt, stretched to 100²", "rt", {}, ("square", 100)),
    ("rt, 128-px tiles", "rt", {}, ("tiles", 128, 16, True)),
)


def _data(spec, n_fit: int, n_good: int, per: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gaikan.synth.textures import THIN_DEFECTS, render_texture

    train = [render_texture(spec, split="train", index=i)[0] for i in range(n_fit)]
    test = [render_texture(spec, index=i)[0] for i in range(n_good)]
    test += [render_texture(spec, d, index=1000 + i)[0] for d in THIN_DEFECTS for i in range(per)]
    labels = np.r_[np.zeros(n_good, int), np.ones(len(test) - n_good, int)]
    return np.stack(train).astype(np.float64), np.stack(test).astype(np.float64), labels


def _square(images: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(im.astype(np.float32), mode="F").resize((side, side)))
            for im in images
        ]
    ).astype(np.float64)


def run(kind: str, params: dict, geometry: tuple, train, test, labels) -> tuple[float, float]:
    """Image AUROC and seconds (fit + scoring) of one configuration."""
    from gaikan.detectors.registry import create
    from gaikan.metrics import roc_auc

    t0 = time.perf_counter()
    if geometry[0] == "square":
        det = create(kind, **params).fit(_square(train, geometry[1]))
        scores = det.anomaly_score(_square(test, geometry[1]))
    else:
        tiling = dict(zip(("tile", "overlap", "per_position"), geometry[1:]))
        det = create("tiled", detector=kind, detector_params=params, **tiling)
        scores = det.fit(train).anomaly_score(test)
    return roc_auc(labels, scores), time.perf_counter() - t0


def _auto(specs, sizes: tuple[int, int, int], budget: float) -> int:
    from gaikan.autoselect import _resize, select
    from gaikan.metrics import roc_auc

    print("| part | auto's pick | objective | real image AUROC | select + refit s |")
    print("|---|---|---|---|---|")
    for spec in specs:
        train, test, labels = _data(spec, *sizes)
        t0 = time.perf_counter()
        res = select(train, budget_s=budget, seed=0)
        secs = time.perf_counter() - t0
        best = next(r for r in res.rows if r["chosen"])
        auc = roc_auc(labels, res.model.anomaly_score(_resize(test, res.best.size)))
        print(
            f"| {spec.name} | {res.best.label} | {best['objective']:.3f} | {auc:.3f} | {secs:.0f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    from gaikan.synth.textures import ELONGATED

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--auto", action="store_true", help="what --detector auto picks")
    ap.add_argument("--budget", type=float, default=600.0, help="with --auto, seconds")
    args = ap.parse_args(argv)
    specs = ELONGATED[:1] if args.quick else ELONGATED
    sizes = (12, 6, 3) if args.quick else (40, 20, 10)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.auto:
        return _auto(specs, sizes, args.budget)
    from gaikan.benchmark import peak_rss_mb

    print("| part | configuration | image AUROC | fit + score s | peak RSS so far MB |")
    print("|---|---|---|---|---|")
    for spec in specs:
        train, test, labels = _data(spec, *sizes)
        for label, kind, params, geometry in CONFIGS:
            auc, secs = run(kind, params, geometry, train, test, labels)
            rss = peak_rss_mb()
            print(f"| {spec.name} | {label} | {auc:.3f} | {secs:.0f} | {rss:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
