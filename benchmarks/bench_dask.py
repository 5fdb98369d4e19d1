"""gaikan inspect and fit on Dask: 1 vs 2 worker processes, and the scheduler's cost per task.

Usage::

    python benchmarks/bench_dask.py                  # 1,000 images, SOARTC 100×100, batches of 32
    python benchmarks/bench_dask.py --n 10000 --batch-size 64
    python benchmarks/bench_dask.py --fit --n 10000  # gaikan fit --dask of 10,000 good images
    python benchmarks/bench_dask.py --patchcore      # distributed coreset vs single-process AUROC

Protocol: ``--n`` synthetic 100×100 PNG parts (good and with a planted
bright square, 8-bit) are written to a temporary folder; a SOARTC model
(k = 10, s = 5) is fitted on 30 good parts.  Every process runs one
thread (``OMP_NUM_THREADS`` = ``NUMBA_NUM_THREADS`` = 1, set before the
workers start), so one worker process = one core.  Rows:

- ``local``: :func:`gaikan.inspection.inspect_files` in this process;
- ``dask local:W``: :func:`gaikan.distributed.inspect_files_dask` on the
  cluster ``--dask local:W`` starts (:func:`gaikan.distributed.open_client`:
  W worker processes, one thread each); cluster start-up and a warm-up
  run (numba compiles on each worker) are timed separately and excluded.

No overlays are written (pure scoring + decoding).  ``per-task overhead``:
wall time of 2,000 no-op tasks through the same scheduler, per task.
The machine is shared by other jobs: read the figures as lower bounds.

``--fit``: SOARTC (k = 10, s = 5) fitted on ``--n`` good 100×100 PNGs.
Rows: ``det.fit`` on all images at once (only up to ``--max-inmem``
images: it holds every image's patches, 290 KB each), the distributed
rounds run in this process batch by batch
(:func:`gaikan.distributed.fit.fit_files_serial`), and
:func:`gaikan.distributed.fit_files_dask` on ``local:W`` (start-up and a
warm-up fit of 64·W files excluded).  Every model is checked against the
batched in-process one (largest relative difference of the training
scores).

``--patchcore``: PatchCore's distributed coreset (per-partition coresets
at twice the ratio, then one of their union) against the single-process
coreset on synthetic 128×128 parts (``--pc-size``): image AUROC of both, bank sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np


def make_parts(root: Path, n: int) -> list[Path]:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import plant_defect, structured_images

    root.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, n, 200):
        k = min(200, n - start)
        imgs = structured_images(k, size=100, seed=start + 1)
        if start // 200 % 2:
            imgs = plant_defect(imgs, seed=start, box=12)[0]
        for i, img in enumerate(imgs):
            p = root / f"{start + i:06d}.png"
            Image.fromarray(img.astype(np.uint8)).save(p)
            files.append(p)
    return files


def _noop(x: int) -> int:
    return x


def make_good(root: Path, n: int) -> list[Path]:
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import structured_images

    root.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, n, 200):
        for i, img in enumerate(structured_images(min(200, n - start), size=100, seed=start + 7)):
            p = root / f"{start + i:06d}.png"
            Image.fromarray(img.astype(np.uint8)).save(p)
            files.append(p)
    return files


def _per_task(client) -> float:
    t = time.perf_counter()
    client.gather(client.map(_noop, range(2000), pure=False))
    return (time.perf_counter() - t) / 2000


def bench_fit(args) -> None:
    import gaikan
    from gaikan.distributed import fit_files_dask, open_client
    from gaikan.distributed.fit import fit_files_serial
    from gaikan.io import load_images

    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_fit_"))
    t = time.perf_counter()
    files = [str(p) for p in make_good(tmp / "good", args.n)]
    print(f"{len(files)} good PNGs written in {time.perf_counter() - t:.1f} s")
    size = (100, 100)

    def make():
        return gaikan.SOARTC(kernel=10, stride=5)

    fit_files_serial(make(), files[:64], size=size)  # numba warm-up
    rows = []
    if args.n <= args.max_inmem:
        t = time.perf_counter()
        make().fit(load_images(files, size).images)
        rows.append(("in process, all at once (det.fit)", time.perf_counter() - t, "", "", ""))
    t = time.perf_counter()
    ref = fit_files_serial(make(), files, size=size, batch_size=args.batch_size).detector
    t_ser = time.perf_counter() - t
    rows.append(("in process, batched (fit_files_serial)", t_ser, "", "", "0"))
    for w in (int(v) for v in args.workers.split(",")):
        t = time.perf_counter()
        client, close = open_client(f"local:{w}")
        t_start = time.perf_counter() - t
        t = time.perf_counter()
        fit_files_dask(make(), files[: 64 * w], client, size=size, batch_size=args.batch_size)
        t_warm = time.perf_counter() - t
        t = time.perf_counter()
        det = fit_files_dask(make(), files, client, size=size, batch_size=args.batch_size).detector
        t_run = time.perf_counter() - t
        diff = float(np.max(np.abs(det.train_scores_ - ref.train_scores_) / ref.train_scores_))
        per_task = _per_task(client)
        close()
        rows.append(
            (f"dask local:{w}", t_run, f"{t_start:.1f} + {t_warm:.1f}", f"{per_task * 1e3:.2f}",
             f"{diff:.1e}")
        )  # fmt: skip
    print(
        f"\nfit: SOARTC 100×100 (k 10, s 5) on {len(files)} good images, batches of "
        f"{args.batch_size}, 1 thread/process (load: {os.getloadavg()[0]:.1f})\n"
    )
    print("run | s | img/s | vs batched in process | start-up + warm-up s | per-task ms | "
          "max rel. diff of training scores")  # fmt: skip
    print("---|---|---|---|---|---|---")
    for name, secs, su, pt, dcell in rows:
        print(f"{name} | {secs:.1f} | {len(files) / secs:.0f} | {t_ser / secs:.2f}× | {su} | {pt} "
              f"| {dcell}")  # fmt: skip


def bench_patchcore(args) -> None:
    from PIL import Image

    from gaikan.deep import PatchCore
    from gaikan.distributed import fit_files_dask, open_client
    from gaikan.io import load_images
    from gaikan.metrics import roc_auc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import plant_defect, structured_images

    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_pc_"))
    (tmp / "good").mkdir()
    for i, img in enumerate(structured_images(args.pc_train, size=args.pc_size, seed=0, noise=6.0)):
        Image.fromarray(img.astype(np.uint8)).save(tmp / "good" / f"{i:04d}.png")
    files = [str(p) for p in sorted((tmp / "good").glob("*.png"))]
    good = structured_images(30, size=args.pc_size, seed=11, noise=6.0)
    bad = np.concatenate(
        [plant_defect(structured_images(10, size=args.pc_size, seed=12 + j, noise=6.0), seed=j, box=b,
                      delta=d)[0]
         for j, (b, d) in enumerate(((12, 60.0), (8, 50.0), (16, -60.0)))]
    )  # fmt: skip
    X = np.concatenate([good, bad])
    y = np.r_[np.zeros(len(good)), np.ones(len(bad))]

    def make():
        return PatchCore(num_threads=1, runtime="eager", coreset_ratio=args.pc_ratio)

    t = time.perf_counter()
    single = make().fit(load_images(files, (args.pc_size, args.pc_size)).images)
    t_single = time.perf_counter() - t
    client, close = open_client("local:2")
    rows = [("single process", single, t_single)]
    try:
        for bs in args.pc_batches:
            t = time.perf_counter()
            det = fit_files_dask(
                make(), files, client, size=(args.pc_size,) * 2, batch_size=bs
            ).detector
            rows.append((f"dask local:2, {-(-len(files) // bs)} partitions", det,
                         time.perf_counter() - t))  # fmt: skip
    finally:
        close()
    print(f"\nPatchCore coreset_ratio {args.pc_ratio}, {len(files)} good {args.pc_size}² training "
          "parts; "
          f"test: {len(good)} good, {len(bad)} defective (load {os.getloadavg()[0]:.1f})\n")  # fmt: skip
    print("fit | bank entries | image AUROC | fit s | threshold")
    print("---|---|---|---|---")
    for name, det, secs in rows:
        auc = roc_auc(y, det.anomaly_score(X))
        print(f"{name} | {len(det.bank_)} | {auc:.4f} | {secs:.1f} | {det.threshold_:.4g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--fit", action="store_true", help="benchmark gaikan fit --dask")
    ap.add_argument("--max-inmem", type=int, default=2000, help="--fit: largest det.fit row")
    ap.add_argument("--patchcore", action="store_true", help="distributed coreset accuracy")
    ap.add_argument("--pc-train", type=int, default=80)
    ap.add_argument("--pc-size", type=int, default=128)
    ap.add_argument("--pc-ratio", type=float, default=0.1)
    ap.add_argument("--pc-batches", type=int, nargs="+", default=[40, 10])
    args = ap.parse_args()
    if args.fit:
        bench_fit(args)
        return
    if args.patchcore:
        bench_patchcore(args)
        return

    import gaikan
    from gaikan.distributed import inspect_files_dask, open_client
    from gaikan.inspection import Inspector, inspect_files

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import structured_images

    tmp = Path(tempfile.mkdtemp(prefix="bench_dask_"))
    t = time.perf_counter()
    files = make_parts(tmp / "parts", args.n)
    print(f"{len(files)} PNGs written in {time.perf_counter() - t:.1f} s")
    model = tmp / "soartc.gaikan"
    gaikan.SOARTC(kernel=10, stride=5).fit(structured_images(30, size=100, seed=0)).save(model)

    insp = Inspector(gaikan.load(model))
    list(inspect_files(insp, files[:64], batch_size=args.batch_size))  # numba warm-up
    t = time.perf_counter()
    local = [r for b in inspect_files(insp, files, batch_size=args.batch_size) for r in b]
    t_local = time.perf_counter() - t
    rows: list[tuple[str, float, tuple[float, float] | None, float | None]] = [
        ("local (1 process)", t_local, None, None)
    ]
    ref = {r.file: r.score for r in local}

    for w in (int(v) for v in args.workers.split(",")):
        t = time.perf_counter()
        client, close = open_client(f"local:{w}")
        t_start = time.perf_counter() - t
        t = time.perf_counter()
        list(inspect_files_dask(model, files[: 64 * w], client, args.batch_size))  # warm-up
        t_warm = time.perf_counter() - t
        t = time.perf_counter()
        got = [r for b in inspect_files_dask(model, files, client, args.batch_size) for r in b]
        t_run = time.perf_counter() - t
        assert len(got) == len(files) and all(ref[r.file] == r.score for r in got)
        t = time.perf_counter()
        client.gather(client.map(_noop, range(2000), pure=False))
        per_task = (time.perf_counter() - t) / 2000
        rows.append((f"dask local:{w}", t_run, (t_start, t_warm), per_task))
        close()

    print(
        f"\n{len(files)} images, SOARTC 100×100, batches of {args.batch_size}, 1 thread/process\n"
    )
    print("run | s | img/s | speed-up vs local | start-up + warm-up s | per-task overhead ms")
    print("---|---|---|---|---|---")
    for name, secs, startup, overhead in rows:
        su = "" if startup is None else f"{startup[0]:.1f} + {startup[1]:.1f}"
        pt = "" if overhead is None else f"{overhead * 1e3:.2f}"
        print(
            f"{name} | {secs:.1f} | {len(files) / secs:.0f} | {t_local / secs:.2f}× | {su} | {pt}"
        )


if __name__ == "__main__":
    main()
