"""CPU cost of recording, per row: the station's writer child and the server's share.

    python benchmarks/bench_records.py              # 2,000 rows per cell
    python benchmarks/bench_records.py --rows 500   # quick look

Rows go through :class:`gaikan.records.writer.WriterProcess` (the station's
default writer) into a fresh SQLite database, in batches of 1, 4 and 16
requests (the group commit's sizes from a calm to a loaded station), half
of them defects with a 9 kB image and a 14 kB overlay (kept with
``--keep ng``), half good parts (nothing kept).  The table gives the CPU
time (user + system) per row of the server's side (pickling onto the pipe,
waiting for the ids) and of the writer child (the pictures' and the rows'
commits), and the wall time per row.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _entries(n: int, rng: np.random.Generator) -> list:
    from gaikan.inspection import Inspection

    out = []
    for i in range(n):
        bad = i % 2 == 0
        ins = Inspection(
            file=f"p{i}.png",
            verdict="defect" if bad else "ok",
            score=1.0 + i,
            threshold=0.5,
            map_max=1.0 + i,
            map_mean=0.2,
            peak_row=3,
            peak_col=4,
        )
        kw = dict(
            source=f"p{i}.png",
            station="bench",
            client="127.0.0.1",
            image_bytes=rng.bytes(9000),
            overlay_png=rng.bytes(14000) if bad else None,
            model_id="m",
            model_version=1,
            latency_ms=5.0,
        )
        out.append((ins, kw))
    return out


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(batch: int, keep: str, rows: int, seed: int = 0) -> dict[str, float]:
    """CPU ms per row of this process and of the writer child; wall ms per row."""
    import psutil

    from gaikan.records import RecordStore, Retention
    from gaikan.records.writer import WriterProcess

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="gaikan-bench-records-") as tmp:
        store = RecordStore(os.path.join(tmp, "records.db"), retention=Retention(keep))
        writer = WriterProcess(store.url, store.blobs.root, store.retention)
        try:
            writer.add_many(_entries(1, rng))  # the child is up and the files exist
            child = psutil.Process(writer._proc.pid)
            batches = [_entries(batch, rng) for _ in range(max(1, rows // batch))]
            n = batch * len(batches)
            kid0, own0, wall0 = sum(child.cpu_times()[:2]), _cpu(), time.perf_counter()
            for b in batches:
                writer.add_many(b)
            wall = time.perf_counter() - wall0
            own, kid = _cpu() - own0, sum(child.cpu_times()[:2]) - kid0
        finally:
            writer.close()
            store.close()
    return {"server": 1e3 * own / n, "writer": 1e3 * kid / n, "wall": 1e3 * wall / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2000, help="rows per cell")
    ap.add_argument("--batches", default="1,4,16", help="requests per commit")
    ap.add_argument("--keep", default="ng,none")
    args = ap.parse_args(argv)
    print(f"rows per cell: {args.rows}; load average {os.getloadavg()[0]:.2f}")
    print("| keep | requests per commit | server CPU ms/row | writer CPU ms/row | wall ms/row |")
    print("|---|---|---|---|---|")
    for keep in args.keep.split(","):
        for b in (int(v) for v in args.batches.split(",")):
            r = measure(b, keep, args.rows)
            print(f"| {keep} | {b} | {r['server']:.3f} | {r['writer']:.3f} | {r['wall']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
