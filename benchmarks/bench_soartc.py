"""SOARTC speed benchmark (issue 2): scoring after fit on one thread.

    python benchmarks/bench_soartc.py            # full table (~2 min)
    python benchmarks/bench_soartc.py --quick    # smaller batches

Rows: gaikan SOARTC in float64 (precision="float64"), in its default mode
(precision="auto": exact float32 Gram matrices on 8-bit images), and in
forced float32 on non-integer input; against two references measured in
the same run: a straightforward numpy evaluation of the spec (full S
matrices, then SOART3 and D²) and a per-patch-pair Python loop (how the
original articles computed it).  Data: ELPV solar cells (real images).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import math
import resource
import time
import tracemalloc

import numpy as np

import gaikan
from gaikan.datasets import elpv_split, load_elpv
from gaikan.patches import extract
from gaikan.taguchi import mahalanobis, self_similarity, soart3


def numpy_reference(det, X):
    """Straightforward numpy evaluation of SOART.md §5 (scoring only)."""
    q = extract(X, det.kernel, det.stride).astype(np.float64)
    s = self_similarity(q)  # (n, P, P)
    f = soart3(s, det.sbar_[None])  # (n, P, 3)
    return mahalanobis(f, det.mean_, det.whiten_).max(axis=1)


def loop_reference(det, img):
    """Per-patch-pair Python loop, as in the original articles."""
    q = extract(img, det.kernel, det.stride).astype(np.float64)
    p = len(q)
    eps = 1e-4
    norms = [float(q[j] @ q[j]) for j in range(p)]
    best = 0.0
    for i in range(p):
        row = [(float(q[i] @ q[j]) + eps) / (norms[j] + eps) for j in range(p)]
        ref = det.sbar_[i]
        beta = (sum(a * b for a, b in zip(ref, row)) + eps) / (sum(a * a for a in ref) + eps)
        r = [abs(a - beta * b) for a, b in zip(row, ref)]
        eta, nu = sum(r), max(r)
        f = np.array(
            [math.log(max(beta, 1e-12)), math.log(eta + 1), math.log(nu + 1) - math.log(eta + 1)]
        )
        d = det.whiten_[i] @ (f - det.mean_[i])
        best = max(best, float(d @ d) / 3)
    return best


def timed(fn, *args, repeat=3):
    fn(*args)  # warm-up (JIT, caches)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def run(size, batch, n_fit, loop_images, quick):
    d = load_elpv(size=size)
    tr, te = elpv_split(d.probs)
    fit_x = d.images[tr[:n_fit]].astype(np.float64)
    test = d.images[te[:batch]].astype(np.float64)
    rows = []
    ref_det = None
    for label, prec, data in [
        ("gaikan float64", "float64", test),
        ("gaikan auto (exact f32 Gram)", "auto", test),
        ("gaikan float32 (non-integer input)", "float32", test + 0.5),
    ]:
        det = gaikan.SOARTC(kernel=10, stride=5, precision=prec)
        t0 = time.perf_counter()
        det.fit(fit_x if prec != "float32" else fit_x + 0.5)
        fit_s = time.perf_counter() - t0
        tracemalloc.start()
        t = timed(det.anomaly_score, data, repeat=1 if quick else 3)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append((label, 1e3 * t / len(data), fit_s, peak))
        if prec == "float64":
            ref_det = det
    t_np = timed(numpy_reference, ref_det, test, repeat=1) / len(test)
    np.testing.assert_allclose(
        numpy_reference(ref_det, test[:4]), ref_det.anomaly_score(test[:4]), rtol=1e-9
    )
    t0 = time.perf_counter()
    for img in test[:loop_images]:
        loop_reference(ref_det, img)
    t_loop = (time.perf_counter() - t0) / loop_images
    return rows, 1e3 * t_np, 1e3 * t_loop


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cases = [(100, 50 if args.quick else 200, 100, 1), (250, 5 if args.quick else 20, 100, 1)]
    print(
        f"# SOARTC scoring after fit, k=10 s=5, one thread (OMP_NUM_THREADS="
        f"{os.environ['OMP_NUM_THREADS']}), ELPV images, fit on 100 good images"
    )
    hdr = f"{'size':>7} {'batch':>5} {'mode':<36} {'ms/img':>8} {'vs numpy ref':>12} {'vs loop ref':>11} {'fit s':>6} {'peak MB':>8}"
    print(hdr)
    print("-" * len(hdr))
    for size, batch, n_fit, loops in cases:
        rows, t_np, t_loop = run(size, batch, n_fit, loops, args.quick)
        for label, ms, fit_s, peak in rows:
            print(
                f"{size:>3}x{size:<3} {batch:>5} {label:<36} {ms:>8.2f} {t_np / ms:>11.1f}x {t_loop / ms:>10.0f}x {fit_s:>6.2f} {peak:>8.1f}"
            )
        print(
            f"{size:>3}x{size:<3} {batch:>5} {'reference: straightforward numpy':<36} {t_np:>8.2f}"
        )
        print(
            f"{size:>3}x{size:<3} {loops:>5} {'reference: per-patch-pair Python loop':<36} {t_loop:>8.0f}"
        )
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
