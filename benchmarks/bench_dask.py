"""gaikan inspect on Dask: 1 vs 2 worker processes, and the scheduler's cost per task.

Usage::

    python benchmarks/bench_dask.py                  # 1,000 images, SOARTC 100×100, batches of 32
    python benchmarks/bench_dask.py --n 10000 --batch-size 64

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()

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
