"""Soak test of ``gaikan watch``: a simulated camera, half-written files, SIGKILL, restart.

    python benchmarks/soak_watch.py                  # 1,000 files at 20 files/s (~1 min)
    python benchmarks/soak_watch.py --files 200      # quick look

A SOARTC model is fitted on synthetic 96×96 parts and saved.  A camera
thread writes ``--files`` PNGs into an inbox at ``--rate`` files/s, one in
three with a planted defect; every file is written in two halves with a
pause between them (the second half often after the watcher's first look),
and every tenth file trickles in over about a second.  A real
``gaikan watch`` subprocess (SQLite, ``--keep ng``) handles the inbox; when
``--kill-at`` of the files are written it is killed with SIGKILL and
restarted at once.  After the camera stops, the watcher is given time to
empty the inbox, then stopped with SIGTERM.

Checks (the run fails loudly otherwise): every file written is in exactly
one of ok/, ng/, error/ with its original bytes, nothing is left in the
inbox, the database has exactly one record per file (so no file was
inspected twice), with the file's SHA-256, its destination and the moved
mark; no file was read half-written (no ``error`` verdict: every file is a
valid image).  Prints throughput, latency and lag figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def parts(n: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """Synthetic good parts: a block pattern with brightness jitter and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 90 + 60 * (((yy // 12) + (xx // 12)) % 2) + 20 * np.sin(xx / 7.0)
    imgs = base[None] * rng.uniform(0.95, 1.05, (n, 1, 1)) + rng.normal(0, 3, (n, size, size))
    return np.clip(np.rint(imgs), 0, 255)


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Camera(threading.Thread):
    """Writes the files, in halves, at a fixed rate; remembers digests and close times."""

    def __init__(self, inbox: Path, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.inbox, self.n, self.rate = inbox, n, rate
        self.digests: dict[str, str] = {}
        self.closed: dict[str, float] = {}
        self.written = 0

    def run(self) -> None:
        rng = np.random.default_rng(1)
        good = parts(64, seed=7)
        t0 = time.monotonic()
        for i in range(self.n):
            img = good[i % 64].copy()
            if i % 3 == 2:
                r, c = rng.integers(8, 80, 2)
                img[r : r + 8, c : c + 8] = np.clip(img[r : r + 8, c : c + 8] + 80, 0, 255)
            data = png(img)
            name = f"part{i:05d}.png"
            self.digests[name] = hashlib.sha256(data).hexdigest()
            threading.Thread(target=self._write, args=(name, data, i % 10 == 0)).start()
            self.written = i + 1
            time.sleep(max(0.0, t0 + (i + 1) / self.rate - time.monotonic()))

    def _write(self, name: str, data: bytes, slow: bool) -> None:
        chunks = 8 if slow else 2
        step = -(-len(data) // chunks)
        with open(self.inbox / name, "wb") as fh:
            for k in range(0, len(data), step):
                fh.write(data[k : k + step])
                fh.flush()
                time.sleep(0.13 if slow else 0.05)
        self.closed[name] = time.time()


def start_watch(inbox: Path, model: Path, db: Path, settle: float, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-c", "from gaikan.cli import main; main()", "watch", str(inbox)]
    cmd += ["--model", str(model), "--db", str(db), "--settle", str(settle), "-q"]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def recorded(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return int(c.execute("SELECT count(*) FROM inspections").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def check(inbox: Path, db: Path, cam: Camera) -> list[tuple]:
    """Exactly once: every file moved once, recorded once, intact; returns the rows."""
    moved: dict[str, tuple[str, str]] = {}
    for sub in ("ok", "ng", "error"):
        for f in (inbox / sub).iterdir():
            assert f.name not in moved, f"{f.name} is in two folders"
            moved[f.name] = (sub, hashlib.sha256(f.read_bytes()).hexdigest())
    left = [f.name for f in inbox.iterdir() if f.is_file()]
    assert not left, f"left in the inbox: {left[:5]}"
    assert set(moved) == set(cam.digests), "moved files differ from the files written"
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT source, digest, verdict, dest, moved_at, latency_ms, created_at FROM inspections"
        ).fetchall()
    names = [Path(r[0]).name for r in rows]
    assert len(names) == len(set(names)) == len(cam.digests), "a file recorded twice or not at all"
    for source, digest, verdict, dest, moved_at, _, _ in rows:
        name = Path(source).name
        sub, on_disk = moved[name]
        assert digest == on_disk == cam.digests[name], f"{name}: digest mismatch"
        assert verdict != "error", f"{name}: read half-written or unreadable"
        assert Path(dest) == inbox / sub / name and moved_at is not None
        assert sub == {"ok": "ok", "defect": "ng"}[verdict]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20.0, help="files per second")
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction written at SIGKILL")
    ap.add_argument("--settle", type=float, default=0.5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import gaikan

    work = Path(tempfile.mkdtemp(prefix="gaikan-soak-"))
    model, inbox, db = work / "m.gaikan", work / "in", work / "records.db"
    inbox.mkdir()
    gaikan.SOARTC(kernel=8, stride=4).fit(parts(40, seed=3)).save(model)
    watch = start_watch(inbox, model, db, args.settle, work / "watch.log")
    time.sleep(2.0)  # let it start before the camera
    cam = Camera(inbox, args.files, args.rate)
    t_start = time.monotonic()
    cam.start()
    while cam.written < args.kill_at * args.files:
        time.sleep(0.01)
    watch.send_signal(signal.SIGKILL)
    watch.wait()
    at_kill, t_kill = recorded(db), time.monotonic()
    watch = start_watch(inbox, model, db, args.settle, work / "watch.log")
    cam.join()
    t_cam = time.monotonic()
    while recorded(db) < args.files and time.monotonic() - t_cam < 120:
        time.sleep(0.1)
    while any(f.is_file() for f in inbox.iterdir()) and time.monotonic() - t_cam < 120:
        time.sleep(0.1)
    t_done = time.monotonic()
    watch.send_signal(signal.SIGTERM)
    watch.wait(timeout=60)
    rows = check(inbox, db, cam)
    lat = np.array([r[5] for r in rows], dtype=float)
    lag = np.array(
        [
            datetime.fromisoformat(r[6]).replace(tzinfo=UTC).timestamp()
            - cam.closed[Path(r[0]).name]
            for r in rows
        ]
    )
    made = np.sort([datetime.fromisoformat(r[6]).timestamp() for r in rows])
    peak = max(int(np.searchsorted(made, t + 1.0) - i) for i, t in enumerate(made))
    print(
        json.dumps(
            {
                "files": args.files,
                "rate_files_per_s": args.rate,
                "killed_after_records": at_kill,
                "killed_at_s": round(t_kill - t_start, 1),
                "all_done_s_after_camera_stopped": round(t_done - t_cam, 2),
                "throughput_files_per_s": round(args.files / (t_done - t_start), 2),
                "peak_records_in_1s": peak,
                "verdicts": {v: sum(r[2] == v for r in rows) for v in ("ok", "defect", "error")},
                "inspect_latency_ms_p50_p99": [
                    round(float(np.percentile(lat, q)), 1) for q in (50, 99)
                ],
                "close_to_record_lag_s_p50_p99_max": [
                    round(float(x), 2) for x in (*np.percentile(lag, [50, 99]), lag.max())
                ],
                "exactly_once": True,
                "watch_log_tail": (work / "watch.log").read_text().strip().splitlines()[-2:],
                "workdir": str(work),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
