"""Tiled inspection of large frames: time, peak RSS, and where the map peaks.

One command, one table::

    python benchmarks/bench_tiling.py                 # 4000 x 3000 frames, tile 256
    python benchmarks/bench_tiling.py --height 1500 --width 2000 --good 5

Synthetic aligned frames (a smooth two-axis pattern, like a board or a
panel, with per-frame sensor noise); one test frame carries a planted
20 x 20 px defect.  Fit and inspection each run in a fresh process so the
peak RSS is that job's own (``VmHWM``, see ``gaikan.benchmark.peak_rss_mb``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def frames(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    base = 128 + np.add.outer(np.sin(np.arange(h) / 23.0) * 30, np.cos(np.arange(w) / 31.0) * 30)
    return np.stack([(base + rng.normal(0, 3, shape)).round() for _ in range(n)])


def job(args: argparse.Namespace) -> dict:
    import gaikan
    from gaikan.detectors.tiled import TiledDetector

    shape = (args.height, args.width)
    t0 = time.perf_counter()
    if args.job == "fit":
        good = frames(args.good, shape, 0)
        det = TiledDetector(
            args.detector,
            {"kernel": 10, "stride": 5},
            tile=args.tile,
            overlap=args.overlap,
            per_position=not args.shared,
        ).fit(good)
        det.save(args.model)
        out = {"tiles_per_frame": len(det.starts_), "threshold": det.threshold_}
    else:
        det = gaikan.load(args.model)
        test = frames(1, shape, 1)
        r0, c0 = shape[0] // 3, shape[1] // 2 + 7
        test[0, r0 : r0 + 20, c0 : c0 + 20] += 45
        res = det.detect(test)
        row, col = np.unravel_index(int(res.maps[0].argmax()), shape)
        out = {
            "score": float(res.scores[0]),
            "threshold": det.threshold_,
            "peak": [int(row), int(col)],
            "defect": [r0, c0, 20],
            "peak_on_defect": bool(r0 <= row < r0 + 20 and c0 <= col < c0 + 20),
        }
    out["seconds"] = time.perf_counter() - t0
    from gaikan.benchmark import peak_rss_mb

    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--good", type=int, default=5, help="good frames in the unit space")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--detector", default="rt")
    ap.add_argument(
        "--shared",
        action="store_true",
        help="one inner detector for all tiles (per_position=False)",
    )
    ap.add_argument("--model", default="/tmp/gaikan-bench-tiled.gaikan")
    ap.add_argument("--job", choices=["fit", "inspect"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.job:
        print(json.dumps(job(args)))
        return
    rows = {}
    for j in ("fit", "inspect"):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--job", j]
        rows[j] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    f, i = rows["fit"], rows["inspect"]
    mode = "one for all tiles" if args.shared else "one per tile position"
    print(
        f"# {args.height} x {args.width} frames, {args.detector} k10 s5 ({mode}), "
        f"tile {args.tile}, overlap {args.overlap}, {f['tiles_per_frame']} tiles per frame"
    )
    print(f"{'job':<28} {'seconds':>8} {'peak RSS MB':>12}")
    print(
        f"{'fit on ' + str(args.good) + ' good frames':<28} {f['seconds']:>8.1f} "
        f"{f['peak_rss_mb']:>12.0f}"
    )
    print(f"{'inspect 1 frame':<28} {i['seconds']:>8.1f} {i['peak_rss_mb']:>12.0f}")
    print(
        f"planted 20 px defect at {i['defect'][:2]}: map peak {i['peak']} "
        f"({'on' if i['peak_on_defect'] else 'NOT on'} the defect); "
        f"score {i['score']:.4g} vs threshold {i['threshold']:.4g}"
    )


if __name__ == "__main__":
    main()
