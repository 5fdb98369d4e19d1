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
(d) ``--classifier``: the defect-mode classifier (6 classes: good and the five
    modes) trained on numpy renders and tested on numpy and on Blender
    renders of the same test parts (mixed layout, oblique view,
    ``--clf-size``², seed ``--seed``; ``--clf-train`` training images per
    class from the generator's ``train`` split, ``--clf-test`` test images
    per class from its ``test`` split). The model is the adopted "reference +
    focus" recipe of ``bench_classifier.py`` (EfficientNet-Lite0,
    ``reference=True``, ``focus=--clf-focus`` pixels at ``--clf-net``²,
    one-cycle fine-tuning for ``--clf-epochs`` epochs, no validation split),
    on the part's fixed ROI (from the mean numpy good training image). A
    third row re-references the same trained model to the mean of
    ``--clf-ref-goods`` Blender-rendered goods of the ``train`` split
    (indices from 1000: parts seen by no other set; no retraining),
    as a user would with good photos of their own line. Rendered arrays are
    kept in ``--out`` (``classifier_numpy.npz``, ``classifier_blender.npz``) and
    reused with ``--reuse`` when their settings match.

    python benchmarks/bench_blender.py --skip-speed --skip-gap --figure '' \
        --classifier --out /tmp/sets
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


CLF_CLASSES = ("good", *MODES)


REF_INDEX0 = 1000  # train-split indices of the Blender reference goods: beyond every training image


def _cached(path: Path, key: str, reuse: bool, build) -> dict[str, np.ndarray]:
    """``build()`` (a dict of arrays), kept in ``path`` with ``key``; reused when the key matches."""
    if reuse and path.exists():
        with np.load(path, allow_pickle=False) as z:
            found = str(z["key"]) if "key" in z.files else "unknown settings"
            if found == key:
                print(f"{path.name}: reused ({key})")
                return {k: z[k] for k in z.files}
            print(f"{path.name} holds {found}, not {key}: rendering")
    sets = build()
    sets["key"] = np.array(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **sets)
    return sets


def _clf_sets(base: Path, a) -> dict[str, np.ndarray]:
    """Numpy train/test, Blender test and Blender reference goods (oblique view), cached.

    The Blender file does not depend on ``--clf-train``, so runs with more or
    fewer numpy training images reuse it.
    """
    view = ("oblique",)
    size, seed, n_test = a.clf_size, a.seed, a.clf_test

    def scenes(split: str, classes, indices) -> list:
        return [
            build_sample_scenes(c, layout="mixed", views=view, seed=seed, split=split, index=i)
            for c in classes
            for i in indices
        ]

    def numpy_sets() -> dict[str, np.ndarray]:
        t = time.perf_counter()
        out: dict[str, np.ndarray] = {}
        for name, split, n in (("tr", "train", a.clf_train), ("te_n", "test", n_test)):
            r = [
                render_views(s, nom, view, size)[0]
                for s, nom in scenes(split, CLF_CLASSES, range(n))
            ]
            out["X" + name], out["M" + name] = (
                np.stack([o[0] for o in r]),
                np.stack([o[1] for o in r]),
            )
        print(f"numpy: {len(out['Xtr'])} train + {len(out['Xte_n'])} test images in "
              f"{time.perf_counter() - t:.1f} s")  # fmt: skip
        return out

    def blender_render(samples, chunk: int = 15) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for k in range(0, len(samples), chunk):
            t = time.perf_counter()
            part = render_views_blender(
                samples[k : k + chunk], view, size, blender=a.blender,
                cycles_samples=a.samples, threads=a.clf_threads,
            )  # fmt: skip
            out += [r[0] for r in part]
            print(
                f"  Blender {k + len(part)}/{len(samples)} images "
                f"({(time.perf_counter() - t) / len(part):.2f} s/image)",
                flush=True,
            )
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def blender_sets() -> dict[str, np.ndarray]:
        t = time.perf_counter()
        out: dict[str, np.ndarray] = {}
        out["Xte_b"], out["Mte_b"] = blender_render(scenes("test", CLF_CLASSES, range(n_test)))
        ref = scenes("train", ("good",), range(REF_INDEX0, REF_INDEX0 + a.clf_ref_goods))
        out["Xref_b"], _ = blender_render(ref)
        print(
            f"Blender: {len(out['Xte_b'])} test + {len(out['Xref_b'])} reference goods in "
            f"{time.perf_counter() - t:.1f} s ({a.samples} samples, {a.clf_threads} threads)"
        )
        return out

    common = f"n_test={n_test} size={size} seed={seed}"
    print()
    d = _cached(
        base / "classifier_numpy.npz", f"n_train={a.clf_train} {common}", a.reuse, numpy_sets
    )
    key_b = f"n_ref={a.clf_ref_goods} {common} samples={a.samples}"
    d.update(_cached(base / "classifier_blender.npz", key_b, a.reuse, blender_sets))
    d["ytr"] = np.repeat(np.array(CLF_CLASSES), a.clf_train)
    d["yte"] = np.repeat(np.array(CLF_CLASSES), n_test)
    return d


def classifier_table(base: Path, a) -> None:
    """(d): train on numpy renders, test on numpy and Blender renders (accuracy per class)."""
    from bench_classifier import crop, roi_from_good
    from gaikan.deep.classifier import Classifier
    from gaikan.deep.evaluate import confusion_matrix

    d = _clf_sets(base, a)
    ytr, yte = d["ytr"], d["yte"]
    Xtr = d["Xtr"].astype(np.float64)
    roi = roi_from_good(Xtr[ytr == "good"])
    Xtr = crop(Xtr, roi)
    tests = {
        "numpy": crop(d["Xte_n"].astype(np.float64), roi),
        "blender": crop(d["Xte_b"].astype(np.float64), roi),
    }
    masks = {"numpy": crop(d["Mte_n"], roi), "blender": crop(d["Mte_b"], roi)}
    ref_b = crop(d["Xref_b"].astype(np.float64), roi)
    clf = Classifier(
        "efficientnet_lite0", image_size=a.clf_net, reference=True, focus=a.clf_focus,
        brightness=0.1, contrast=0.1, max_shift=0.03, valid_frac=0.0, patience=None,
        batch_size=32, random_state=0, num_threads=a.clf_threads,
    )  # fmt: skip
    t = time.perf_counter()
    clf.fine_tune(Xtr, ytr, epochs=a.clf_epochs, base_lr=2e-3, freeze_epochs=1, lr_mult=10)
    t_fit = time.perf_counter() - t
    print(
        f"\n(d) defect-mode classifier trained on numpy renders: EfficientNet-Lite0, "
        f"reference=True, focus={a.clf_focus} px at {a.clf_net}², {a.clf_epochs} epochs "
        f"(one-cycle, base_lr 2e-3, lr_mult 10, 1 frozen epoch, batch 32, seed 0), "
        f"{a.clf_train} train / {a.clf_test} test images per class, oblique {a.clf_size}², "
        f"ROI {Xtr.shape[1]} rows × {Xtr.shape[2]} columns; fit {t_fit:.0f} s "
        f"(last epoch's train loss {clf.history_[-1]['train_loss']:.3f})"
    )
    print(
        "cells: accuracy per true class (share of its test images classified correctly); "
        "good/def: share right about good vs defective; "
        "window: share of defective test images whose focus window covers a mask pixel"
    )
    print(
        f"{'test set':<34}"
        + "".join(f"{c:>9}" for c in (*CLF_CLASSES, "all", "good/def", "window"))
    )
    rows = [("numpy", "numpy", None), ("blender", "Blender", None)]
    rows.append(("blender", f"Blender, ref. {len(ref_b)} Blender goods", ref_b))
    ref_n = clf.reference_
    for key, name, ref in rows:
        clf.reference_ = ref_n if ref is None else ref.mean(0).astype(np.float32)
        pred = clf.predict(tests[key])
        cells = [float((pred[yte == c] == c).mean()) for c in CLF_CLASSES]
        cells.append(float((pred == yte).mean()))
        defective = yte != "good"
        cells.append(float(((pred != "good") == defective).mean()))
        boxes = clf.input_pipeline().focus_boxes(tests[key][defective])
        assert boxes is not None  # focus is set
        m = masks[key][defective]
        cells.append(
            float(
                np.mean([m[i, r : r + h, c : c + w].any() for i, (r, c, h, w) in enumerate(boxes)])
            )
        )
        print(f"{name:<34}" + "".join(f"{v:>9.3f}" for v in cells), flush=True)
        cm = confusion_matrix(yte, pred, labels=CLF_CLASSES)
        print(f"{'':<4}confusion (rows true, columns predicted, {', '.join(CLF_CLASSES)}):")
        for c, r in zip(CLF_CLASSES, cm):
            print(f"{'':<6}{c:<8}" + "".join(f"{v:>4d}" for v in r))
    clf.reference_ = ref_n


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
    ap.add_argument(
        "--classifier", action="store_true", help="(d): defect-mode classifier numpy → Blender"
    )
    ap.add_argument("--clf-train", type=int, default=40, help="training images per class")
    ap.add_argument("--clf-test", type=int, default=15, help="test images per class")
    ap.add_argument("--clf-ref-goods", type=int, default=15, help="Blender goods for re-reference")
    ap.add_argument("--clf-size", type=int, default=128)
    ap.add_argument("--clf-focus", type=int, default=40, help="focus window, image pixels")
    ap.add_argument("--clf-net", type=int, default=64, help="network input size of the window")
    ap.add_argument("--clf-epochs", type=int, default=8)
    ap.add_argument("--clf-threads", type=int, default=2, help="torch and Cycles threads")
    a = ap.parse_args()
    if a.quick:
        a.n_good, a.n_test_good, a.n_defect, a.samples = 6, 3, 2, 8
        a.clf_train, a.clf_test, a.clf_ref_goods, a.clf_epochs = 3, 2, 2, 1
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
        if a.classifier:
            base = Path(a.out) if a.out else tmp
            classifier_table(base, a)
        if a.figure:
            figure(
                Path(a.figure), a.figure_defect, a.figure_index, 192, max(a.samples, 32), a.blender
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
