"""Raspberry-Pi-class reference: single-thread latency and peak RSS of every numpy kind.

Usage::

    python benchmarks/bench_pi.py                 # every kind, 40 timed images each
    python benchmarks/bench_pi.py --kinds soartc rt --n 100

Protocol: models are fitted here (synthetic 8-bit parts,
``tests/conftest.py``'s ``structured_images``) at their default sizes and
saved; each kind is then measured in a **fresh Python process** with one
thread (``OMP_NUM_THREADS`` = ``NUMBA_NUM_THREADS`` = ``OPENBLAS_NUM_THREADS``
= ``MKL_NUM_THREADS`` = 1), which imports gaikan, loads the model file,
runs one warm-up call (numba compiles there), then times ``n`` calls of
``detector.detect`` on one image each (scores *and* maps, as ``gaikan
inspect`` and ``serve`` use them).  Reported: median and 95th-percentile
ms per image, the cold start (import + load + first call), and the
process's peak resident set size (``VmHWM`` of ``/proc/self/status``:
the high-water mark of the whole run, imports and numba's compiler
included; ``ru_maxrss`` would count the parent's memory before ``exec``) against a stated
**256 MB budget** — met or not per kind.  torch is never imported (the
child checks).  The machine is shared: note the load printed with the
table; a Pi 4/5 core is roughly 3–5× slower than one x86 core here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BUDGET_MB = 256
THREADS = ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: kind label → (constructor, image side for fit/test, extra env for the child)
KINDS: dict[str, tuple[str, int, dict[str, str]]] = {
    "soartc": ("gaikan.SOARTC()", 100, {}),
    "soartc (numpy, no numba)": ("gaikan.SOARTC(backend='numpy')", 100, {"GAIKAN_NO_NUMBA": "1"}),
    "soart3map": ("gaikan.SOART3Map()", 100, {}),
    "rt": ("gaikan.RTDetector()", 100, {}),
    "variants (2 × soartc)": ("VariantDetector(detector='soartc', n_variants=2)", 100, {}),
    "tiled (soartc, 256-px tiles, 512² frames)": (
        "TiledDetector('soartc', tile=256, overlap=32)",
        512,
        {},
    ),
    "tiled (soartc, 256-px tiles, tile_batch 4)": (
        "TiledDetector('soartc', tile=256, overlap=32, tile_batch=4)",
        512,
        {},
    ),
    "tiled (soartc, 100-px tiles, 512² frames)": (
        "TiledDetector('soartc', tile=100, overlap=20)",
        512,
        {},
    ),
}

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()

import numpy as np
import gaikan
from gaikan.benchmark import peak_rss_mb, rss_mb  # this process's own (not ru_maxrss)
model = gaikan.load(sys.argv[1])
imgs = np.load(sys.argv[2])
n = int(sys.argv[3])
rss_loaded = rss_mb()
model.detect(imgs[:1])
cold = time.perf_counter() - t0
times = []
for i in range(n):
    x = imgs[i % len(imgs)][None]
    t = time.perf_counter()
    model.detect(x)
    times.append(time.perf_counter() - t)
ms = np.array(times) * 1e3
print(json.dumps({
    "median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
    "cold_s": cold, "rss_loaded_mb": rss_loaded,
    "rss_peak_mb": peak_rss_mb(),
    "torch": "torch" in sys.modules,
}))
"""


def fit_models(root: Path, kinds: list[str]) -> dict[str, tuple[Path, Path]]:
    import gaikan
    from gaikan.detectors.tiled import TiledDetector
    from gaikan.detectors.variants import VariantDetector

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import plant_defect, structured_images

    ns = {"gaikan": gaikan, "TiledDetector": TiledDetector, "VariantDetector": VariantDetector}
    out = {}
    for i, label in enumerate(kinds):
        make, side, _ = KINDS[label]
        n_fit = 8 if side > 100 else 30
        good = structured_images(n_fit, size=side, seed=0)
        if label.startswith("variants"):  # two visibly different versions of the part
            good = np.concatenate([good[:15], 255 - good[15:]])
        det = eval(make, ns).fit(good)
        model = root / f"m{i}.gaikan"
        det.save(model)
        test = np.concatenate(
            [
                structured_images(4, size=side, seed=5),
                plant_defect(structured_images(4, size=side, seed=6))[0],
            ]
        ).astype(np.float64)
        imgs = root / f"x{i}.npy"
        np.save(imgs, test)
        out[label] = (model, imgs)
    return out


def measure(model: Path, imgs: Path, n: int, extra_env: dict[str, str]) -> dict:
    env = dict(os.environ, **dict.fromkeys(THREADS, "1"), **extra_env)
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(imgs), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), help="labels (prefixes) to run")
    ap.add_argument("--n", type=int, default=40, help="timed single-image calls per kind")
    args = ap.parse_args()
    kinds = [k for k in KINDS if any(k.startswith(p) for p in args.kinds)]
    root = Path(tempfile.mkdtemp(prefix="bench_pi_"))
    models = fit_models(root, kinds)
    print(
        f"\n1 thread per process, fresh process per kind, {args.n} timed single-image "
        f"detect() calls; budget {BUDGET_MB} MB peak RSS; load {os.getloadavg()[0]:.1f}\n"
    )
    print("kind | image | ms/img median | p95 | cold start s | RSS after load MB | "
          f"peak RSS MB | ≤ {BUDGET_MB} MB")  # fmt: skip
    print("---|---|---|---|---|---|---|---")
    for label in kinds:
        model, imgs = models[label]
        side = KINDS[label][1]
        r = measure(model, imgs, args.n, KINDS[label][2])
        assert not r["torch"], f"{label} imported torch"
        ok = "met" if r["rss_peak_mb"] <= BUDGET_MB else "**not met**"
        print(
            f"{label} | {side}² | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | {r['cold_s']:.2f} | "
            f"{r['rss_loaded_mb']:.0f} | {r['rss_peak_mb']:.0f} | {ok}"
        )


if __name__ == "__main__":
    main()
