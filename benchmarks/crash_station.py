"""Crash check of the recording station: SIGKILL `gaikan serve --db` mid-load, restart, verify.

    python benchmarks/crash_station.py                 # 3 kills, 32 clients, SQLite
    python benchmarks/crash_station.py --kills 5 --load 8 --clients 16

A SOARTC model is fitted on synthetic 100×100 parts and served by a real
``gaikan serve MODEL --db records.db --keep ng`` subprocess on 127.0.0.1.
``--clients`` asynchronous httpx clients post one image per request (half
good, half defective; answers checked against the library).  After
``--load`` seconds of load the server gets SIGKILL (no clean shutdown: the
scoring threads, the writer thread and any half-written WAL frame die with
it), is restarted on the same database, and the load resumes; this is
repeated ``--kills`` times, then a last phase runs on the restarted server.

Afterwards, with the server stopped:

- ``PRAGMA integrity_check`` must say ``ok`` (and ``quick_check`` too);
- every answer a client got with status 200 must be in the database under
  the id it carried, with the digest of the bytes sent (a client never got
  an "ok" that was not committed), and no id may have been answered twice;
- every kept image and overlay of a record is on disk and hashes to its
  key (the image's key is the record's digest);
- rows beyond the answered files are requests committed just before the kill
  whose answer never reached the client (they are counted, and allowed:
  the client got a transport error, never a verdict).

Prints the figures and PASS/FAIL; exit status 0 on PASS.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gaikan.records.blobs import FILE_NAME
from load_service import Server, Stats, build, check_recorded, drive


def _load(
    out: dict[str, Stats], url: str, uploads: list, clients: int, seconds: float, seed: int
) -> None:
    out["st"] = drive(url, uploads, clients, seconds, seed=seed)


def _pragmas(path: Path) -> tuple[str, str, str]:
    """SQLite's integrity_check, quick_check and journal_mode of one file."""
    con = sqlite3.connect(path)
    try:
        return tuple(  # type: ignore[return-value]
            con.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("integrity_check", "quick_check", "journal_mode")
        )
    finally:
        con.close()


def check_blobs(db: str) -> tuple[int, int]:
    """Every record's kept image and overlay: present, and its bytes hash to its key.

    Returns (records with kept pictures, pictures missing or corrupt).
    """
    from gaikan.records import RecordStore, sha256

    n = bad = 0
    with RecordStore(db) as store:
        offset = 0
        while page := store.query(limit=1000, offset=offset, newest_first=False):
            offset += len(page)
            for rec in page:
                if rec.image_key is None and rec.overlay_key is None:
                    continue
                n += 1
                bad += rec.image_key is not None and rec.image_key != rec.digest
                for key in (rec.image_key, rec.overlay_key):
                    if key is not None:
                        data = store.blobs.get(key)
                        bad += data is None or sha256(data) != key
    return n, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs, each followed by a restart")
    ap.add_argument("--load", type=float, default=8.0, help="seconds of load before each kill")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="server scoring threads")
    ap.add_argument("--keep", default="ng", choices=["ng", "all", "none"])
    args = ap.parse_args(argv)

    answered: list[tuple[int, str]] = []
    requests = failed = wrong = 0
    with tempfile.TemporaryDirectory(prefix="gaikan-crash-") as tmp:
        work = Path(tmp)
        db = work / "records.db"
        model, uploads = build(100, work)
        extra = ("--db", str(db), "--keep", args.keep, "--max-uploads-per-client", "256")
        print(
            f"crash check: {args.kills} SIGKILLs of `gaikan serve --db {db.name} --keep "
            f"{args.keep}` under {args.clients} clients, {args.load:g} s of load before each"
        )
        for phase in range(args.kills + 1):
            srv = Server(model, args.workers, 2.0, work / f"server-{phase}.log", extra)
            try:
                srv.wait_up()
                out: dict[str, Stats] = {}
                # killed phases: the clients go on 0.5 s past the kill (refused connections)
                duration = args.load + (0.5 if phase < args.kills else 5.0)
                th = threading.Thread(
                    target=_load, args=(out, srv.url, uploads, args.clients, duration, phase)
                )
                th.start()
                if phase < args.kills:
                    time.sleep(args.load)
                    os.kill(srv.proc.pid, signal.SIGKILL)
                    srv.proc.wait(10)
                    killed = "SIGKILL"
                else:
                    killed = "clean stop"
                th.join()
            finally:
                srv.stop()
            st = out["st"]
            answered += st.answered
            requests += st.requests
            failed += st.errors
            wrong += st.wrong
            print(
                f"  phase {phase + 1}: {st.requests} answers, {len(st.answered)} recorded "
                f"ids, {st.errors} failed requests (cut by the kill, or refused in the 0.5 s "
                f"after it), {st.wrong} wrong results; ended by {killed}"
            )

        integrity, quick, journal = _pragmas(db)
        # the kept pictures' file (next to the database) must be sound too
        pictures = work / "blobs" / FILE_NAME
        pic_integrity = _pragmas(pictures)[0] if pictures.exists() else "no file"
        rows, n_answered, problem = check_recorded(str(db), answered, fresh=False)
        n_kept, bad_blobs = check_blobs(str(db))

    extra_rows = rows - n_answered
    print(f"  PRAGMA integrity_check: {integrity}; quick_check: {quick}; journal_mode: {journal}")
    print(f"  pictures file ({FILE_NAME}) integrity_check: {pic_integrity}")
    print(
        f"  answered files {n_answered}, rows in the database {rows} "
        f"({extra_rows} committed whose answer was cut by a kill)"
    )
    print(
        "  every answered id present with the digest sent, no id answered twice: "
        + (problem or "yes")
    )
    print(
        f"  kept images and overlays of {n_kept} records read back and hashed: "
        f"{bad_blobs} missing or corrupt"
    )
    print(f"  failed requests (clients got an error, never a verdict): {failed}")
    failures = (integrity != "ok") + (quick != "ok") + bool(problem) + (extra_rows < 0) + wrong
    failures += bad_blobs + (pic_integrity != "ok" and args.keep != "none")
    print("PASS" if failures == 0 else f"FAIL ({failures} problems)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
