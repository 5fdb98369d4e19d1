"""Blender (Cycles) renderer against the numpy ray caster: speed, domain gap, figure.

    OMP_NUM_THREADS=1 taskset -c 0,1 python benchmarks/bench_blender.py   # all three
    python benchmarks/bench_blender.py --quick                          # smoke run
    python benchmarks/bench_blender.py --skip-speed --out /tmp/sets     # keep the sets
    python benchmarks/bench_blender.py --skip-speed --out /tmp/sets --reuse --padim --figure ''

Needs ``bpy`` (``pip install "gaikan[blender]"``) or ``--blender PATH``.

(a) Render time per image (PNG writing, the id passes for masks and the
    Blender process start included, via ``make_dataset``), views top and
    oblique, at 128² and 256²: numpy on 1 worker, Blender with 1 and 2
    Cycles threads (``--samples`` paths per pixel, denoised).
(b) Domain gap: the same parts (mixed layout, seed, ``--n-good`` train goods,
    ``--n-test-good`` test goods, ``--n-defect`` per defect mode) rendered by
    both renderers at ``--size`` (100²); SOARTC (kernel 10, stride 5,
    ``map_baseline="median"``) fitted on one renderer's goods and tested on
    either renderer's test set: per defect mode and view, image AUROC (test
    goods vs that mode), pixel AUROC (pooled over the test goods and that
    mode's images) and pointing (share of that mode's images whose hottest
    map pixel lies inside the mask).
    ``--padim`` adds PaDiM (EfficientNet-Lite0, 224², layers 2+3, stride 8,
    100 channels) rows.
(c) A figure: one defective part rendered both ways (top and oblique), mask
    outline in green, saved to ``--figure``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import gaikan
from gaikan.metrics import pixel_roc_auc, roc_auc
from gaikan.synth import build_sample_scenes, make_dataset, render_views, render_views_blender

MODES = ("missing", "pushed", "shifted", "tilt_x", "tilt_y")
VIEWS = ("top", "oblique")


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (Blender)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _timed_cpu(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn()``; CPU time does not grow when others load the machine."""
    c, t = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t, _cpu() - c


def speed_table(tmp: Path, n128: int, n256: int, samples: int, blender: str | None) -> None:
    print(
        f"\n(a) render time per image, views top+oblique, PNGs and mask id passes included; "
        f"Blender: Cycles CPU, {samples} samples, denoised, process start included"
    )
    print(
        f"{'size':>5} {'renderer':<10} {'cores':>5} {'images':>6} {'s/image':>8} {'CPU s/image':>11}"
    )
    for size, n in ((128, n128), (256, n256)):
        kw: dict[str, Any] = dict(
            n_good=n, n_test_good=0, n_defect=0, size=size, seed=1, views=VIEWS
        )
        d = tmp / f"speed_{size}"
        dt, cpu = _timed_cpu(partial(make_dataset, d / "numpy", workers=1, **kw))
        k = 2 * n
        print(f"{size:>5} {'numpy':<10} {1:>5} {k:>6} {dt / k:>8.3f} {cpu / k:>11.3f}", flush=True)
        for threads in (1, 2):
            run = partial(make_dataset, d / f"blender{threads}", renderer="blender")
            dt, cpu = _timed_cpu(
                partial(run, blender=blender, samples=samples, threads=threads, **kw)
            )
            print(
                f"{size:>5} {'blender':<10} {threads:>5} {k:>6} {dt / k:>8.3f} {cpu / k:>11.3f}",
                flush=True,
            )
        same = all(
            (d / "blender1" / p.relative_to(d / "blender2")).read_bytes() == p.read_bytes()
            for p in (d / "blender2").rglob("*.png")
        )
        print(f"{'':>5} Blender files identical with 1 and 2 threads: {same}")
        shutil.rmtree(d, ignore_errors=True)


def _pointing(maps: np.ndarray, masks: np.ndarray) -> float:
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return float(masks.reshape(len(masks), -1)[np.arange(len(masks)), flat].mean())


def _detectors(padim: bool) -> list[tuple[str, object]]:
    dets: list[tuple[str, object]] = [
        ("SOARTC", lambda: gaikan.SOARTC(kernel=10, stride=5, map_baseline="median"))
    ]
    if padim:
        from gaikan.deep import PaDiM

        dets.append(
            (
                "PaDiM",
                lambda: PaDiM(
                    image_size=224, layers=(2, 3), feature_stride=8, n_features=100, num_threads=1
                ),
            )
        )
    return dets


def gap_table(roots: dict[str, Path], padim: bool) -> None:
    from gaikan.io import load_mvtec

    print(
        "\n(b) domain gap: fitted on one renderer's goods, tested on either renderer's test set; "
        "SOARTC k10 s5 map_baseline=median"
        + (", PaDiM EfficientNet-Lite0 224² layers 2+3 stride 8 100 ch" if padim else "")
        + "; cells: image AUROC / pixel AUROC / pointing"
    )
    print(
        f"{'detector':<8} {'fit → test':<18} {'view':<8}"
        + "".join(f"{m:>18}" for m in (*MODES, "all"))
    )
    for view in VIEWS:
        data = {k: load_mvtec(r / view) for k, r in roots.items()}
        for name, make in _detectors(padim):
            for fit_src in ("numpy", "blender"):
                det = make().fit(data[fit_src].train.images)  # type: ignore[operator]
                for test_src in ("numpy", "blender"):
                    d = data[test_src]
                    res = det.detect(d.test.images)
                    types = np.array(d.test_types)
                    good = types == "good"
                    cells = []
                    for m in (*MODES, "all"):
                        sel = (types == m) if m != "all" else ~good
                        keep = good | sel
                        ia = roc_auc(sel[keep], res.scores[keep])
                        pa = pixel_roc_auc(d.masks[keep], res.maps[keep])
                        pt = _pointing(res.maps[sel], d.masks[sel])
                        cells.append(f"{ia:>8.3f}/{pa:.3f}/{pt:.2f}")
                    print(
                        f"{name:<8} {fit_src + ' → ' + test_src:<18} {view:<8}" + "".join(cells),
                        flush=True,
                    )


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask
    inner = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    return m & ~inner


def figure(path: Path, defect: str, index: int, size: int, samples: int, blender) -> None:
    from PIL import Image, ImageDraw

    scene, nominal = build_sample_scenes(defect, views=VIEWS, seed=0, split="test", index=index)
    num = render_views(scene, nominal, VIEWS, size)
    (ble,) = render_views_blender(
        [(scene, nominal)], VIEWS, size, blender=blender, cycles_samples=samples
    )
    tiles = []
    for (img_n, m_n), (img_b, m_b), view in zip(num, ble, VIEWS):
        row = []
        for img, m, name in ((img_n, m_n, "numpy"), (img_b, m_b, "Blender Cycles")):
            rgb = np.stack([img] * 3, -1)
            rgb[_outline(m)] = (0, 255, 0)
            im = Image.fromarray(rgb)
            ImageDraw.Draw(im).text((4, 4), f"{name}, {view}", fill=(255, 255, 0))
            row.append(np.asarray(im))
        tiles.append(np.concatenate(row, axis=1))
    big = np.concatenate(tiles, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(big).save(path, optimize=True)
    d = scene.meta["defect"]
    print(
        f"\n(c) figure: {path} ({path.stat().st_size // 1024} kB): test part {index}, {defect} "
        f"pin {d['pin']} severity {d['severity']}, {size}², masks (green) from each renderer's ids"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-good", type=int, default=30)
    ap.add_argument("--n-test-good", type=int, default=10)
    ap.add_argument("--n-defect", type=int, default=5)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=32, help="Cycles paths per pixel")
    ap.add_argument("--workers", type=int, default=1, help="Blender processes side by side")
    ap.add_argument("--blender", default=None, help="Blender executable or Python with bpy")
    ap.add_argument("--out", default=None, help="keep the two sets here (default: temporary)")
    ap.add_argument("--figure", default="docs/img/blender_vs_numpy.png")
    ap.add_argument("--figure-defect", default="tilt_x")
    ap.add_argument("--figure-index", type=int, default=1)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-n", default="8,4", help="parts (×2 views) timed at 128², 256²")
    ap.add_argument("--skip-gap", action="store_true")
    ap.add_argument(
        "--reuse", action="store_true", help="use the two sets already in --out (no rendering)"
    )
    ap.add_argument("--padim", action="store_true", help="add PaDiM rows (needs gaikan[deep])")
    ap.add_argument("--quick", action="store_true", help="tiny sets (smoke run)")
    a = ap.parse_args()
    if a.quick:
        a.n_good, a.n_test_good, a.n_defect, a.samples = 6, 3, 2, 8
    tmp = Path(tempfile.mkdtemp(prefix="gaikan-bench-blender-"))
    try:
        if not a.skip_speed:
            n128, n256 = (2, 1) if a.quick else (int(v) for v in a.speed_n.split(","))
            speed_table(tmp, n128, n256, a.samples, a.blender)
        if not a.skip_gap:
            base = Path(a.out) if a.out else tmp
            kw: dict[str, Any] = dict(
                layout="mixed", n_good=a.n_good, n_test_good=a.n_test_good, n_defect=a.n_defect,
                defects=MODES, views=VIEWS, size=a.size, seed=a.seed,
            )  # fmt: skip
            roots = {"numpy": base / "numpy", "blender": base / "blender"}
            if a.reuse and a.out:
                print(f"\nsets: reused from {base}")
            else:
                t_n = _timed(lambda: make_dataset(roots["numpy"], **kw))
                bkw: dict[str, Any] = dict(
                    renderer="blender", blender=a.blender, samples=a.samples, workers=a.workers
                )
                t_b = _timed(partial(make_dataset, roots["blender"], **bkw, **kw))
                print(
                    f"\nsets: mixed layout, {a.n_good} train goods, {a.n_test_good} test goods, "
                    f"{a.n_defect} per mode, views top+oblique, {a.size}², seed {a.seed}; "
                    f"numpy {t_n:.1f} s, Blender {t_b:.1f} s ({a.samples} samples)"
                )
            gap_table(roots, a.padim)
        if a.figure:
            figure(
                Path(a.figure), a.figure_defect, a.figure_index, 192, max(a.samples, 32), a.blender
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
