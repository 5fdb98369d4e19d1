"""Exported PaDiM (ONNX Runtime, OpenVINO; float32 and int8) vs the torch path: latency, RSS.

Usage::

    python benchmarks/bench_export.py                 # PaDiM 256², 2 threads, batch 1 and 16
    python benchmarks/bench_export.py --threads 1 --size 128

Protocol: a PaDiM (defaults: EfficientNet-Lite0, the default layers and
channels) is fitted on ``--n-train`` synthetic textures and exported with
:func:`gaikan.deep.export.export_detector` to ONNX and OpenVINO IR, in
float32 and (when ``--int8``, the default) with the experimental int8
backbone (calibrated on 16 of the training textures).  Each runtime then
runs in a freshly spawned process (so its peak RSS is its own) with
``--threads`` threads and scores ``detect`` (score + map) on 16 synthetic
images:

- ``torch eager``: ``PaDiM(runtime="eager")``, all in PyTorch;
- ``torch + ORT backbone``: ``PaDiM(runtime="onnx")`` (the default on CPU):
  backbone in ONNX Runtime, Gaussians and maps in torch;
- ``ONNX Runtime fp32`` / ``OpenVINO fp32``: the exported file, torch
  blocked from import, runs of 2 images (the default ``batch_size``);
  ``ONNX Runtime fp32, runs of 16``: one graph run per 16 images;
- ``ONNX Runtime int8`` / ``OpenVINO int8``: the int8 export (runs of 2).

``--auroc DATASET`` measures int8's accuracy instead (docs/export.md,
"int8"): image AUROC of PaDiM scored by torch, the exported float graph,
the int8 graph (ONNX Runtime and OpenVINO) and an int8 backbone whose
Gaussians were refitted on int8 features, on ``elpv`` (anchor split) or
``connectors:oblique`` with ``--n-train`` unit-space images and
``--n-test`` test images (half defective; seeded subsets)::

    python benchmarks/bench_export.py --auroc elpv --size 256 --n-train 200 --n-test 500
    python benchmarks/bench_export.py --auroc connectors:oblique --size 128 --n-train 200

``ms/img b1``: one image per call (median of ``--reps1`` calls after a
warm-up); ``ms/img b16``: batches of 16 (median of ``--reps16`` calls);
``peak RSS``: the process's VmHWM (model + one batch of 16); ``max score
err``: largest relative score difference from torch eager on the 16
images, ``verdicts``: whether all 16 verdicts equal torch eager's.  Times
exclude image decoding.  The load average is printed before and after
(the machine may be shared: medians, not means).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def textures(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        dy, dx = rng.uniform(-1.5, 1.5, 2)
        t = np.sin((xx + dx) / 4.0) * np.sin((yy + dy) / 4.0)
        out[i] = np.clip(np.rint(128 + 50 * t + rng.normal(0, 6, (size, size))), 0, 255)
    return out


def _time(fn, x: np.ndarray, reps: int) -> float:
    fn(x)  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) / x.shape[0] * 1e3


def child(args: argparse.Namespace) -> None:
    """Run in a fresh process: load one runtime, time it, print a JSON line."""
    if args.runtime.startswith("exported"):
        for m in ("torch", "torchvision", "timm"):
            sys.modules[m] = None  # type: ignore[assignment]
        import gaikan

        det = gaikan.load(args.exported)
        det.set_params(num_threads=args.threads, batch_size=args.batch_size)
        det._session_ = None  # rebuilt with the thread count
    else:
        import torch

        import gaikan

        torch.set_num_threads(args.threads)
        det = gaikan.load(args.model)
        det.set_params(num_threads=args.threads, runtime=args.runtime, batch_size=16)
        det._fe = None
    x = textures(16, args.size, seed=99)
    x[8:, 40:72, 40:72] = 250.0  # half of them with a bright square (a defect)
    b1 = _time(det.detect, x[:1], args.reps1)
    b16 = _time(det.detect, x, args.reps16)
    from gaikan.benchmark import peak_rss_mb

    rss = peak_rss_mb()
    res = det.detect(x)
    print(
        json.dumps(
            {
                "b1": b1,
                "b16": b16,
                "rss_mb": rss,
                "scores": [float(v) for v in res.scores],
                "defect": [bool(v) for v in res.is_defect],
            }
        )
    )


def _subset(d, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tr = np.sort(rng.permutation(len(d.train))[:n_train])
    te = np.arange(len(d.test))
    if n_test < len(te):
        pos, neg = np.flatnonzero(d.labels == 1), np.flatnonzero(d.labels == 0)
        k = min(n_test // 2, len(pos))
        te = np.sort(np.r_[rng.permutation(pos)[:k], rng.permutation(neg)[: n_test - k]])
    return d.train[tr].astype(np.float32), d.test[te].astype(np.float32), d.labels[te]


def _int8_refit_fit(Xtr: np.ndarray, cal: np.ndarray, threads: int):
    """PaDiM whose ONNX backbone is the int8 one, fitted (Gaussians on int8 features)."""
    import onnxruntime as ort

    from gaikan.deep import PaDiM
    from gaikan.deep import features as F
    from gaikan.deep.export_int8 import quantize_int8

    def export_int8(self, model):
        graph = self.backbone_onnx(model)
        x = self.preprocess(cal).numpy()  # (m, c, h, w), the backbone's input
        q = quantize_int8(graph, x, input_name="x")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        return ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])

    orig = F.FeatureExtractor._export_onnx
    F.FeatureExtractor._export_onnx = export_int8  # type: ignore[method-assign]
    try:
        return PaDiM(num_threads=threads, runtime="onnx").fit(Xtr)
    finally:
        F.FeatureExtractor._export_onnx = orig  # type: ignore[method-assign]


def auroc(args: argparse.Namespace) -> None:
    """int8 vs float: image AUROC of PaDiM on a dataset (docs/export.md, "int8")."""
    import os

    import torch

    from gaikan.benchmark import load_bench_data
    from gaikan.deep import PaDiM
    from gaikan.deep.export import export_detector
    from gaikan.metrics import roc_auc

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    Xtr, Xte, y = _subset(load_bench_data(args.auroc, args.size), args.n_train, args.n_test)
    cal = Xtr[np.random.default_rng(1).permutation(len(Xtr))[:32]]
    det = PaDiM(num_threads=args.threads).fit(Xtr)
    scores = {"torch": det.anomaly_score(Xte)}
    kw = {"num_threads": args.threads, "check_images": Xte[:8]}
    scores["ONNX fp32"] = export_detector(det, **kw).anomaly_score(Xte)
    scores["ONNX int8"] = export_detector(det, int8_calibration=cal, **kw).anomaly_score(Xte)
    try:
        ov = export_detector(det, fmt="openvino", int8_calibration=cal, **kw)
        scores["OpenVINO int8"] = ov.anomaly_score(Xte)
    except Exception as exc:
        print(f"OpenVINO int8 skipped: {exc}")
    refit = _int8_refit_fit(Xtr, cal, args.threads)
    ref = scores["torch"]
    print(
        f"{args.auroc} {args.size}², {len(Xtr)} unit-space images, {len(Xte)} test images "
        f"({int(y.sum())} defective); PaDiM defaults, {args.threads} threads\n"
    )
    print("path | image AUROC | Δ vs torch | max relative score change | verdicts flipped")
    print("---|---|---|---|---")
    base = roc_auc(y, ref)
    for name, s in scores.items():
        a = roc_auc(y, s)
        err = float(np.max(np.abs(s - ref) / np.abs(ref)))
        flips = int(np.sum((s > det.threshold_) != (ref > det.threshold_)))
        print(f"{name} | {a:.4f} | {a - base:+.4f} | {err:.2g} | {flips}/{len(y)}")
    s = refit.anomaly_score(Xte)
    a = roc_auc(y, s)
    flips = int(np.sum((s > refit.threshold_) != (ref > det.threshold_)))
    print(f"int8 backbone, Gaussians refitted | {a:.4f} | {a - base:+.4f} | — | {flips}/{len(y)}")
    load1 = os.getloadavg()
    print(
        f"\n{time.perf_counter() - t0:.0f} s; load average before {load0[0]:.1f}, "
        f"after {load1[0]:.1f} ({os.cpu_count()} CPUs)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--reps1", type=int, default=20)
    ap.add_argument("--reps16", type=int, default=5)
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 rows")
    ap.add_argument("--auroc", metavar="DATASET", help="measure int8's image AUROC instead")
    ap.add_argument("--n-test", type=int, default=1000, help="test images for --auroc")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runtime", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--exported", help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.auroc:
        auroc(args)
        return
    import os

    import torch

    from gaikan.deep import PaDiM
    from gaikan.deep.export import compare, export_detector

    try:
        import openvino  # noqa: F401

        has_ov = True
    except ImportError:
        has_ov = False
    load0 = os.getloadavg()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    train = textures(args.n_train, args.size, seed=0)
    det = PaDiM(num_threads=args.threads).fit(train)
    det.save(tmp / "padim.gaikan")
    files: dict[str, Path] = {}
    t = time.perf_counter()
    exported = export_detector(det, num_threads=args.threads)
    t_export = time.perf_counter() - t
    exported.save(tmp / "onnx.gaikan")
    files["onnx"] = tmp / "onnx.gaikan"
    fmts = ["onnx", "openvino"] if has_ov else ["onnx"]
    for fmt in fmts:
        if fmt != "onnx":
            export_detector(det, fmt=fmt, num_threads=args.threads).save(tmp / f"{fmt}.gaikan")
            files[fmt] = tmp / f"{fmt}.gaikan"
        if args.int8:
            q = export_detector(det, fmt=fmt, num_threads=args.threads, int8_calibration=train[:16])
            q.save(tmp / f"{fmt}-int8.gaikan")
            files[f"{fmt}-int8"] = tmp / f"{fmt}-int8.gaikan"
    check = compare(det, exported, textures(16, args.size, seed=5))
    print(
        f"PaDiM {args.size}², grid {det.grid_shape_}, export {t_export:.1f} s, "
        f"{files['onnx'].stat().st_size / 1e6:.1f} MB file; export check on 16 images: "
        f"score {check['score_rel']:.1e} rel, map {check['map_abs']:.1e} normalised, "
        f"verdicts equal {check['verdicts_equal']}"
        + ("" if has_ov else "; OpenVINO not installed: its rows are skipped")
    )
    rows = [
        ("torch eager", "eager", "onnx", 16),
        ("torch + ORT backbone", "onnx", "onnx", 16),
        ("ONNX Runtime fp32 (no torch)", "exported", "onnx", 2),
        ("ONNX Runtime fp32, runs of 16", "exported", "onnx", 16),
        ("OpenVINO fp32 (no torch)", "exported", "openvino", 2),
        ("ONNX Runtime int8 (experimental)", "exported", "onnx-int8", 2),
        ("OpenVINO int8 (experimental)", "exported", "openvino-int8", 2),
    ]
    print(
        f"\n{args.threads} threads | ms/img b1 | ms/img b16 | peak RSS MB | max score err "
        "| verdicts"
    )
    print("---|---|---|---|---|---")
    ref: dict | None = None
    for name, rt, key, bs in rows:
        if key not in files:
            continue
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--runtime",
            rt,
            "--model",
            str(tmp / "padim.gaikan"),
            "--exported",
            str(files[key]),
            "--batch-size",
            str(bs),
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
            "--reps1",
            str(args.reps1),
            "--reps16",
            str(args.reps16),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if ref is None:
            ref = r
        s_ref, s = np.asarray(ref["scores"]), np.asarray(r["scores"])
        err = float(np.max(np.abs(s - s_ref) / np.abs(s_ref)))
        same = (
            "equal"
            if r["defect"] == ref["defect"]
            else (f"{sum(a != b for a, b in zip(r['defect'], ref['defect']))}/16 differ")
        )
        print(f"{name} | {r['b1']:.1f} | {r['b16']:.1f} | {r['rss_mb']:.0f} | {err:.1e} | {same}")
    load1 = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
