"""Synthetic connector data: render speed and detection quality, one command.

    OMP_NUM_THREADS=1 python benchmarks/bench_synth.py            # both tables + figure
    python benchmarks/bench_synth.py --skip-detect                # speed only
    python benchmarks/bench_synth.py --quick                      # small, for a smoke run

(a) Render speed of the default numpy ray caster per image (PNG writing
    included, via ``make_dataset``) at 128² and 256² with 1 and 2 workers.
(b) Detection table on a seeded set (mixed layout, ``--n-good`` unit-space
    images, ``--n-test-good`` test goods, ``--n-defect`` per defect mode,
    views top and oblique, 128²), written in the MVTec AD layout and read
    back with ``gaikan.io.load_mvtec``: image AUROC (test goods vs that
    mode) and pixel AUROC (pooled over the pixels of the test goods and that
    mode's images) for SOARTC, SOART3Map and RTDetector.
(c) A figure (PNG) of a few defects with their masks and SOARTC maps,
    written to ``--figure`` (default in the system temp folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import gaikan
from gaikan.synth import make_dataset

try:  # the lead's metrics module; a local fallback keeps the script usable
    from gaikan.metrics import pixel_roc_auc, roc_auc
except ImportError:  # pragma: no cover
    from scipy.stats import rankdata

    def roc_auc(labels, scores):
        y = np.asarray(labels).astype(bool).ravel()
        r = rankdata(np.asarray(scores, dtype=float).ravel())
        n1 = y.sum()
        return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * (y.size - n1)))

    def pixel_roc_auc(masks, maps):
        return roc_auc(np.asarray(masks).ravel(), np.asarray(maps).ravel())


MODES = ("missing", "pushed", "shifted", "tilt_x", "tilt_y")


def speed_table(out: Path, n128: int, n256: int) -> None:
    print("\n(a) render speed, numpy ray caster, views top+oblique, PNG writing included")
    print(f"{'size':>6} {'workers':>7} {'images':>6} {'s/image':>8} {'images/s':>8}")
    for size, n in ((128, n128), (256, n256)):
        for workers in (1, 2):
            d = out / f"speed_{size}_{workers}"
            t = time.perf_counter()
            make_dataset(d, n_good=n, n_test_good=0, n_defect=0, size=size, seed=1, workers=workers)
            dt = time.perf_counter() - t
            k = 2 * n
            print(f"{size:>6} {workers:>7} {k:>6} {dt / k:>8.3f} {k / dt:>8.1f}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
    d = out / "speed_ss"
    t = time.perf_counter()
    make_dataset(
        d, n_good=max(2, n128 // 4), n_test_good=0, n_defect=0, size=128, seed=1, supersample=2
    )
    dt = time.perf_counter() - t
    k = 2 * max(2, n128 // 4)
    print(f"{'128 ss2':>6} {1:>7} {k:>6} {dt / k:>8.3f} {k / dt:>8.1f}   (2×2 supersampling)")
    shutil.rmtree(d, ignore_errors=True)


def _cmap(a: np.ndarray) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["inferno"](np.clip(a, 0, 1))[..., :3] * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask
    inner = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    return m & ~inner


def detection_table(
    root: Path, kernel: int, stride: int, figure: Path | None, extra: list[tuple[int, int]]
) -> None:
    from gaikan.io import load_mvtec

    dets = [
        (f"SOARTC k{kernel}s{stride}", lambda: gaikan.SOARTC(kernel=kernel, stride=stride)),
        (f"SOART3Map k{kernel}s{stride}", lambda: gaikan.SOART3Map(kernel=kernel, stride=stride)),
        (f"RTDetector k{kernel}s{stride}", lambda: gaikan.RTDetector(kernel=kernel, stride=stride)),
    ]
    for k, s in extra:
        dets.append((f"SOARTC k{k}s{s}", lambda k=k, s=s: gaikan.SOARTC(kernel=k, stride=s)))
    print("\n(b) detection: image AUROC / pixel AUROC per defect mode (goods vs that mode)")
    head = (
        f"{'detector':<20} {'view':<8}"
        + "".join(f"{m:>14}" for m in MODES)
        + f"{'all':>14} {'fit+score':>9}"
    )
    print(head)
    panels = []
    for view in ("top", "oblique"):
        data = load_mvtec(root / view)
        Xtr = data.train.images
        Xte = data.test.images
        types = np.array(data.test_types)
        good = types == "good"
        for name, make in dets:
            t = time.perf_counter()
            det = make().fit(Xtr)
            res = det.detect(Xte)
            scores, maps = res.scores, res.maps
            dt = time.perf_counter() - t
            cells = []
            for m in (*MODES, "all"):
                sel = (types == m) if m != "all" else ~good
                if not sel.any():
                    cells.append(f"{'-':>14}")
                    continue
                keep = good | sel
                ia = roc_auc(sel[keep], scores[keep])
                pa = pixel_roc_auc(data.masks[keep], maps[keep])
                cells.append(f"{ia:>7.3f}/{pa:.3f}")
            print(f"{name:<20} {view:<8}" + "".join(cells) + f"{dt:>8.1f}s", flush=True)
            if figure is not None and name == dets[0][0]:  # the main SOARTC, both views
                gmax = float(np.percentile(maps[good], 99.9))
                for m in MODES:
                    j = int(np.flatnonzero(types == m)[0])
                    panels.append((view, m, Xte[j], data.masks[j], maps[j], gmax))
    if figure is not None and panels:
        _figure(panels, figure)


def _figure(panels, path: Path) -> None:
    from PIL import Image, ImageDraw

    rows = []
    for view, mode, img, mask, amap, gmax in panels:
        g = np.clip(img, 0, 255).astype(np.uint8)
        rgb = np.stack([g] * 3, -1)
        withm = rgb.copy()
        withm[_outline(mask)] = (0, 255, 0)
        mk = np.stack([mask.astype(np.uint8) * 255] * 3, -1)
        hm = _cmap(np.log1p(amap) / np.log1p(max(amap.max(), 4 * gmax)))
        ov = (0.5 * rgb + 0.5 * hm).astype(np.uint8)
        ov[_outline(mask)] = (0, 255, 0)
        row = np.concatenate([withm, mk, hm, ov], axis=1)
        im = Image.fromarray(row).resize((row.shape[1] * 2, row.shape[0] * 2), Image.NEAREST)
        ImageDraw.Draw(im).text((4, 4), f"{view} {mode}", fill=(255, 255, 0))
        rows.append(np.asarray(im))
    big = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(big).save(path)
    print(f"\n(c) figure: {path}  (columns: image + mask outline, mask, SOARTC map (log), overlay)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-good", type=int, default=200)
    ap.add_argument("--n-test-good", type=int, default=50)
    ap.add_argument("--n-defect", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kernel", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument(
        "--extra",
        default="8x2",
        help="extra SOARTC kernel×stride rows, comma-separated ('' for none)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--out", default=None, help="dataset folder (default: a temporary one, removed)"
    )
    ap.add_argument(
        "--figure", default=os.path.join(tempfile.gettempdir(), "gaikan-synth-figure.png")
    )
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sets (smoke run)")
    a = ap.parse_args()
    if a.quick:
        a.n_good, a.n_test_good, a.n_defect, a.extra = 30, 10, 5, ""
    extra = [tuple(int(v) for v in e.split("x")) for e in a.extra.split(",") if e.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="gaikan-bench-synth-"))
    try:
        if not a.skip_speed:
            speed_table(tmp, 10 if a.quick else 40, 4 if a.quick else 16)
        if not a.skip_detect:
            root = Path(a.out) if a.out else tmp / "set"
            t = time.perf_counter()
            make_dataset(
                root, layout="mixed", n_good=a.n_good, n_test_good=a.n_test_good, n_defect=a.n_defect,
                defects=MODES, views=("top", "oblique"), size=128, seed=a.seed, workers=a.workers,
            )  # fmt: skip
            print(
                f"\nset: mixed layout, {a.n_good} train goods, {a.n_test_good} test goods, {a.n_defect} per mode, "
                f"views top+oblique, 128², seed {a.seed}; rendered in {time.perf_counter() - t:.1f}s "
                f"with {a.workers} worker(s)"
            )
            detection_table(root, a.kernel, a.stride, Path(a.figure) if a.figure else None, extra)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
