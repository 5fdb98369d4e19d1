"""Exported PaDiM (one ONNX graph, ONNX Runtime) vs the torch path: latency and peak RSS.

Usage::

    python benchmarks/bench_export.py                 # PaDiM 256², 2 threads, batch 1 and 16
    python benchmarks/bench_export.py --threads 1 --size 128

Protocol: a PaDiM (defaults: EfficientNet-Lite0, layers 3+4, 200 channels)
is fitted on ``--n-train`` synthetic 256×256 textures and exported with
:func:`gaikan.deep.export.export_detector`.  Each runtime then runs in a
freshly spawned process (so its peak RSS is its own) with ``--threads``
intra-op threads and scores ``detect`` (score + map) on synthetic images:

- ``torch eager``: ``PaDiM(runtime="eager")``, all in PyTorch;
- ``torch + ORT backbone``: ``PaDiM(runtime="onnx")`` (the default on CPU):
  backbone in ONNX Runtime, Gaussians and maps in torch;
- ``exported (ORT)``: the ``onnx-detector`` file, torch blocked from import,
  one graph run per 16 images (``batch_size=16``) or per 2 (``batch_size=2``).

``ms/img b1``: one image per call (median of ``--reps1`` calls after a
warm-up); ``ms/img b16``: batches of 16 (median of ``--reps16`` calls);
``peak RSS``: the process's VmHWM (model + one batch of 16).
Times exclude image decoding.  The machine is shared: medians, not means.
"""

from __future__ import annotations

import argparse
import json
import resource
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


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        import gaikan.runtime  # registers onnx-detector until the registry has it

        det = gaikan.load(args.exported)
        det.set_params(
            num_threads=args.threads, batch_size=2 if args.runtime == "exported2" else 16
        )
        det._session_ = None  # rebuilt with the thread count
    else:
        import torch

        import gaikan

        torch.set_num_threads(args.threads)
        det = gaikan.load(args.model)
        det.set_params(num_threads=args.threads, runtime=args.runtime, batch_size=16)
        det._fe = None
    x = textures(16, args.size, seed=99)
    b1 = _time(det.detect, x[:1], args.reps1)
    b16 = _time(det.detect, x, args.reps16)
    rss = peak_rss_mb()
    print(json.dumps({"b1": b1, "b16": b16, "rss_mb": rss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--reps1", type=int, default=20)
    ap.add_argument("--reps16", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--runtime", default="eager", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--exported", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import torch

    from gaikan.deep import PaDiM
    from gaikan.deep.export import compare, export_detector

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    det = PaDiM(num_threads=args.threads).fit(textures(args.n_train, args.size, seed=0))
    det.save(tmp / "padim.gaikan")
    t = time.perf_counter()
    exported = export_detector(det, num_threads=args.threads)
    t_export = time.perf_counter() - t
    exported.save(tmp / "padim.onnx.gaikan")
    check = compare(det, exported, textures(16, args.size, seed=5))
    print(
        f"PaDiM {args.size}², grid {det.grid_shape_}, export {t_export:.1f} s, "
        f"{(tmp / 'padim.onnx.gaikan').stat().st_size / 1e6:.1f} MB file; equality on 16 images: "
        f"score {check['score_rel']:.1e} rel, map {check['map_abs']:.1e} of threshold, "
        f"verdicts equal {check['verdicts_equal']}"
    )
    print(f"\n{args.threads} threads | ms/img b1 | ms/img b16 | peak RSS MB")
    print("---|---|---|---")
    for name, rt in (
        ("torch eager", "eager"),
        ("torch + ORT backbone", "onnx"),
        ("exported (ORT, no torch)", "exported"),
        ("exported, runs of 2 images", "exported2"),
    ):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--runtime",
            rt,
            "--model",
            str(tmp / "padim.gaikan"),
            "--exported",
            str(tmp / "padim.onnx.gaikan"),
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
        print(f"{name} | {r['b1']:.1f} | {r['b16']:.1f} | {r['rss_mb']:.0f}")


if __name__ == "__main__":
    main()
