"""Load and fault benchmark of the inspection station (`gaikan serve`), loopback only.

    python benchmarks/load_service.py                 # 60 s per phase (~6 min)
    python benchmarks/load_service.py --duration 10   # quick look
    python benchmarks/load_service.py --soak          # 32 clients, bad + stalled uploads, 60 s

For each image size (100×100 and 256×256) a SOARTC model is fitted on
synthetic parts, saved, and served by a real ``gaikan serve`` subprocess
on 127.0.0.1.  Asynchronous httpx clients (8, then 32 at once) post one
image per request for ``--duration`` seconds each, half good parts and
half with planted defects.  Every answer is checked against the library
(same score, same verdict).  The table gives requests/s, p50/p99 latency,
errors (non-200, transport errors, wrong results: must be 0) and the
server's RSS after warm-up (which runs until the bounded overlay LRU is
full: its steady state), at the start and at the end of each phase.

The fault run then mixes 10 % bad uploads into the 100×100 load: truncated
PNGs, text files, images over --max-pixels, bodies over --max-upload-mb and
a good image paired with a corrupt one in one request.  It checks that the
server stays up, every good image gets the correct result, every bad one
a 4xx or a per-file error, and that /metrics shows no internal error.

The soak (``--soak``, run alone) drives 32 clients, each on its own
loopback address, for ``--duration`` seconds at 100×100 with 10 % bad
uploads (as above) and 10 % stalled uploads (headers and 1 kB of a 100 kB
body, then silence until the server's 408 after ``--read-timeout``).  It
prints the status counts, correct answers, p99 latency, 5xx count and the
server's RSS at the start and the end.

Recording (``--db sqlite`` or ``--db URL``): every phase runs twice, once
with ``gaikan serve --no-record`` and once recording into a fresh SQLite
file (or the given database, emptied of nothing: the check is on the ids
answered in that run), and the table gains a ``db`` column.  After each
recorded phase the database is checked: every answered file (warm-up
included) is present under the id the answer gave, with the digest of the
bytes sent, and (for a fresh SQLite file) the row count equals the number
of answered files.  ``--rounds N`` alternates the two N times (for noisy
hosts), e.g.::

    python benchmarks/load_service.py --duration 30 --sizes 100 --clients 32 \
        --db sqlite --rounds 3 --no-fault

Without ``--db`` the servers run ``--no-record`` (the stateless station).
Every simulated client posts from 127.0.0.1, so the per-address cap is
lifted (``--max-uploads-per-client 256``) outside the soak.

Everything stops by itself: each phase is bounded by --duration, the
server is terminated at the end (or on any failure).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The server's overlay LRU size (create_app's default overlay_entries).
OVERLAY_ENTRIES = 512


def parts(n: int, size: int, seed: int, defect: bool = False) -> np.ndarray:
    """Structured 8-bit grey parts; ``defect`` plants a bright square or a dark scratch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cell = max(4, size // 8)
    base = 90 + 60 * (((yy // cell) + (xx // cell)) % 2) + 20 * np.sin(xx / (size / 12))
    out = base[None] * rng.uniform(0.97, 1.03, (n, 1, 1)) + rng.normal(0, 3.0, (n, size, size))
    if defect:
        b = max(6, size // 10)
        for i in range(n):
            y, x = rng.integers(b, size - 2 * b, 2)
            if i % 2:
                out[i, y : y + b, x : x + b] += 90
            else:
                out[i, y : y + 2, x : x + 3 * b // 2 + 1] -= 80
    return np.clip(np.rint(out), 0, 255)


def png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Upload:
    files: list[tuple[str, bytes]]
    expect: list[tuple[str, float | None]]  # per file: ("ok"|"defect", score) or ("bad", None)
    body_too_big: bool = False


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)  # pool work per request (elapsed_ms)
    requests: int = 0
    errors: int = 0  # transport errors, 5xx, unexpected status
    wrong: int = 0  # a good image with a wrong/missing result
    bad_ok: int = 0  # bad uploads answered with 4xx / per-file error
    bad_missed: int = 0  # bad uploads that got a score (must be 0)
    good_images: int = 0
    notes: list[str] = field(default_factory=list)
    answered: list[tuple[int, str]] = field(default_factory=list)  # (record id, sha256) per file

    def note(self, msg: str) -> None:
        if len(self.notes) < 5:
            self.notes.append(msg)


class Server:
    """A `gaikan serve` subprocess on a free loopback port."""

    def __init__(
        self,
        model: Path,
        workers: int | None,
        max_upload_mb: float,
        log: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-c",
            "from gaikan.cli import main; main()",
            "serve",
            str(model),
            "--port",
            str(self.port),
            "--max-upload-mb",
            str(max_upload_mb),
            "--log-level",
            "warning",
        ]
        if workers:
            cmd += ["--workers", str(workers)]
        cmd += list(extra)
        if "--db" not in extra and "--no-record" not in extra:
            cmd.append("--no-record")  # the stateless station unless a database is asked for
        self.log = log
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT)

    def wait_up(self, timeout: float = 90.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not come up")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) used so far by the server and by its children."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        t = proc.cpu_times()
        kids = 0.0
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                kids += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return t.user + t.system, kids

    def alive(self) -> bool:
        import httpx

        try:
            return (
                self.proc.poll() is None
                and httpx.get(self.url + "/healthz", timeout=5).status_code == 200
            )
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logf.close()


async def _drive(
    url: str, uploads: list[Upload], clients: int, duration: float, seed: int
) -> Stats:
    import httpx

    st = Stats()
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one_client(k: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + k)
        while time.perf_counter() < stop_at:
            up = uploads[rng.randrange(len(uploads))]
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    "/v1/inspect",
                    files=[("files", (n, d, "application/octet-stream")) for n, d in up.files],
                )
            except httpx.HTTPError as exc:
                st.errors += 1
                st.note(f"transport: {exc!r}")
                continue
            st.latencies.append(time.perf_counter() - t0)
            st.requests += 1
            n_bad = sum(e[0] == "bad" for e in up.expect)
            if up.body_too_big:
                if r.status_code == 413:
                    st.bad_ok += n_bad
                else:
                    st.errors += 1
                    st.note(f"oversized body got {r.status_code}")
                continue
            if r.status_code != 200:
                st.errors += 1
                st.note(f"status {r.status_code}: {r.text[:200]}")
                continue
            payload = r.json()
            st.server_ms.append(payload["elapsed_ms"])
            results = payload["results"]
            for (_, data), res in zip(up.files, results):
                if "id" in res:
                    st.answered.append((int(res["id"]), hashlib.sha256(data).hexdigest()))
            for (verdict, score), res in zip(up.expect, results):
                if verdict == "bad":
                    if "error" in res and "score" not in res:
                        st.bad_ok += 1
                    else:
                        st.bad_missed += 1
                        st.note(f"bad file scored: {res}")
                    continue
                st.good_images += 1
                if (
                    res.get("verdict") != verdict
                    or res.get("score") is None
                    or not np.isclose(
                        res["score"], np.nan if score is None else score, rtol=1e-9, atol=0
                    )
                ):
                    st.wrong += 1
                    st.note(f"wrong: expected {verdict} {score}, got {res}")

    async def run_client(k: int) -> None:
        # One connection per simulated client (like separate line PCs); a
        # shared httpx pool serialises on its own locks at high concurrency.
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            await one_client(k, client)

    await asyncio.gather(*(run_client(k) for k in range(clients)))
    return st


def drive(url: str, uploads: list[Upload], clients: int, duration: float, seed: int = 0) -> Stats:
    return asyncio.run(_drive(url, uploads, clients, duration, seed))


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def warm_up(srv: Server, uploads: list[Upload], limit_s: float = 60.0) -> list[tuple[int, str]]:
    """Load until the server's overlay LRU is full (its bounded steady state) or limit_s.

    Returns the (record id, digest) of every recorded answer (empty when not recording).
    """
    import httpx

    answered: list[tuple[int, str]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        answered += drive(srv.url, uploads, 8, 3.0).answered
        text = httpx.get(srv.url + "/metrics").text
        if metric(text, "gaikan_overlay_cache_entries") >= OVERLAY_ENTRIES:
            break
    return answered


def check_recorded(db: str, answered: list[tuple[int, str]], fresh: bool) -> tuple[int, int, str]:
    """Every answered (id, digest) in the database: (rows, answered, problem or '')."""
    from gaikan.records import RecordStore

    with RecordStore(db) as store:
        rows = store.count()
        recs = {}
        for i in range(0, len(answered), 1000):
            ids = [rid for rid, _ in answered[i : i + 1000]]
            recs.update({r.id: r.digest for r in _by_ids(store, ids)})
    missing = [rid for rid, _ in answered if rid not in recs]
    wrong = [rid for rid, d in answered if rid in recs and recs[rid] != d]
    problem = ""
    if missing or wrong:
        problem = f"{len(missing)} answered files missing, {len(wrong)} with another digest"
    elif len({rid for rid, _ in answered}) != len(answered):
        problem = "two answers carried the same record id"
    elif fresh and rows != len(answered):
        problem = f"{rows} rows in the database but {len(answered)} answered files"
    return rows, len(answered), problem


def _by_ids(store, ids: list[int]) -> list:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from gaikan.records import Record
    from gaikan.records.models import InspectionRow

    with Session(store.engine) as s:
        rows = s.scalars(select(InspectionRow).where(InspectionRow.id.in_(ids)))
        return [Record.from_row(r) for r in rows]


def build(size: int, workdir: Path, n_eval: int = 16) -> tuple[Path, list[Upload]]:
    """Fit and save a SOARTC model for ``size``; good/defect uploads with expected results."""
    import gaikan
    from gaikan.io import decode_image

    kernel, stride = (10, 5) if size <= 128 else (16, 8)
    det = gaikan.SOARTC(kernel=kernel, stride=stride).fit(parts(20, size, seed=1))
    path = workdir / f"soartc-{size}.gaikan"
    det.save(path)
    imgs = [(f"good-{i}.png", png(im)) for i, im in enumerate(parts(n_eval // 2, size, seed=2))]
    imgs += [
        (f"defect-{i}.png", png(im))
        for i, im in enumerate(parts(n_eval // 2, size, seed=3, defect=True))
    ]
    decoded = np.stack([decode_image(d, n, size=det.image_shape_) for n, d in imgs])
    res = det.detect(decoded)
    uploads = []
    for (name, data), score, bad in zip(imgs, res.scores, res.is_defect):
        truth = "defect" if name.startswith("defect") else "ok"
        if ("defect" if bad else "ok") != truth:
            print(
                f"note: {name} is misclassified by the model itself (score {score:.4g}, "
                f"threshold {det.threshold_:.4g}); the check compares with the library"
            )
        uploads.append(Upload([(name, data)], [("defect" if bad else "ok", float(score))]))
    return path, uploads


def fault_uploads(good: list[Upload], max_upload_mb: float, size: int) -> list[Upload]:
    """90 % good uploads and 10 % bad ones (by count of requests)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    ok_png = good[0].files[0][1]
    buf = io.BytesIO()
    Image.new("L", (6000, 5000)).save(buf, format="PNG")  # 30 MP > 25 MP default limit
    huge_pixels = buf.getvalue()
    bad = [
        Upload([("cut.png", ok_png[: len(ok_png) // 2])], [("bad", None)]),
        Upload([("notes.png", b"this is a text file, not an image\n" * 20)], [("bad", None)]),
        Upload([("huge.png", huge_pixels)], [("bad", None)]),
        Upload([("flip.png", bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))], [("bad", None)]),
        Upload(
            [("big.bin", bytes(int(max_upload_mb * 2**20 * 1.5)))],
            [("bad", None)],
            body_too_big=True,
        ),
        Upload(
            [good[1].files[0], ("corrupt.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 500)],
            [good[1].expect[0], ("bad", None)],
        ),
    ]
    # 9 good uploads for each bad one: repeat the good list to 9× the bad count.
    reps = max(1, -(-9 * len(bad) // len(good)))
    return (good * reps)[: 9 * len(bad)] + bad


async def _stalled(url: str, source: str, read_timeout: float) -> tuple[int | None, float]:
    """Send headers and 1 kB of a 100 kB upload, then nothing: (status answered, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    try:
        writer.write(
            b"POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n" + b"x" * 1000
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), read_timeout + 30)
        status = int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None
        return status, time.perf_counter() - t0
    finally:
        writer.close()


@dataclass
class SoakStats(Stats):
    stalled: int = 0
    stalled_408: int = 0  # answered 408 within the deadline (+2 s)
    stalled_late: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


async def _soak_drive(
    url: str, good: list[Upload], bad: list[Upload], clients: int, duration: float, timeout: float
) -> SoakStats:
    """``clients`` clients, each on its own loopback address (127.0.0.2, ...), for ``duration``."""
    import httpx

    st = SoakStats()
    stop_at = time.perf_counter() + duration

    async def one_client(k: int) -> None:
        rng = random.Random(1000 + k)
        source = f"127.0.0.{2 + k}"
        transport = httpx.AsyncHTTPTransport(
            local_address=source, limits=httpx.Limits(max_connections=1)
        )
        async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as client:
            while time.perf_counter() < stop_at:
                draw = rng.random()
                if draw < 0.10:
                    st.stalled += 1
                    status, took = await _stalled(url, source, timeout)
                    st.statuses[status or 0] = st.statuses.get(status or 0, 0) + 1
                    if status == 408 and took <= timeout + 2.0:
                        st.stalled_408 += 1
                    elif len(st.stalled_late) < 5:
                        st.stalled_late.append(
                            f"stalled upload: status {status} after {took:.1f} s"
                        )
                    continue
                up = bad[rng.randrange(len(bad))] if draw < 0.20 else good[rng.randrange(len(good))]
                await _soak_post(client, up, st)

    await asyncio.gather(*(one_client(k) for k in range(clients)))
    return st


async def _soak_post(client, up: Upload, st: SoakStats) -> None:
    import httpx

    t0 = time.perf_counter()
    try:
        r = await client.post(
            "/v1/inspect?overlay=0",
            files=[("files", (n, d, "application/octet-stream")) for n, d in up.files],
        )
    except httpx.HTTPError as exc:
        st.errors += 1
        st.note(f"transport: {exc!r}")
        return
    st.latencies.append(time.perf_counter() - t0)
    st.requests += 1
    st.statuses[r.status_code] = st.statuses.get(r.status_code, 0) + 1
    if up.body_too_big:
        ok = r.status_code == 413
        st.bad_ok += ok
        st.errors += not ok
        return
    if r.status_code != 200:
        st.errors += 1
        st.note(f"status {r.status_code}: {r.text[:200]}")
        return
    for (verdict, score), res in zip(up.expect, r.json()["results"]):
        if verdict == "bad":
            if "error" in res and "score" not in res:
                st.bad_ok += 1
            else:
                st.bad_missed += 1
            continue
        st.good_images += 1
        want = np.nan if score is None else score
        got = res.get("score")
        if (
            res.get("verdict") != verdict
            or got is None
            or not np.isclose(got, want, rtol=1e-9, atol=0)
        ):
            st.wrong += 1
            st.note(f"wrong: expected {verdict} {score}, got {res}")


def soak(args: argparse.Namespace) -> int:
    """The soak: 32 clients for --duration s, 10 % bad and 10 % stalled uploads, 100x100.

    Each client has its own loopback address, so the per-client upload cap
    applies as it would on a line of PCs.  A stalled upload sends its
    headers and 1 kB of a 100 kB body, then waits for the server's 408.
    """
    import httpx

    clients = 32
    print(
        f"gaikan serve soak: loopback, {os.cpu_count()} CPUs visible, {clients} clients, "
        f"{args.duration:g} s, read deadline {args.read_timeout:g} s, 10 % bad + 10 % stalled"
    )
    with tempfile.TemporaryDirectory(prefix="gaikan-soak-") as tmp:
        work = Path(tmp)
        model, good = build(100, work)
        bad = fault_uploads(good, args.max_upload_mb, 100)[-6:]
        extra = ("--read-timeout", str(args.read_timeout), "--log-level", "warning")
        srv = Server(model, args.workers, args.max_upload_mb, work / "soak.log", extra)
        try:
            srv.wait_up()
            warm_up(srv, good, limit_s=20.0)
            rss0 = srv.rss_mb()
            st = asyncio.run(
                _soak_drive(srv.url, good, bad, clients, args.duration, args.read_timeout)
            )
            rss1 = srv.rss_mb()
            up = srv.alive()
            text = httpx.get(srv.url + "/metrics").text
        finally:
            srv.stop()
        tb = srv.log.read_text(errors="replace").count("Traceback")
    return _soak_report(st, text, up, tb, rss0, rss1, args.duration)


def _soak_report(
    st: SoakStats, text: str, up: bool, tb: int, rss0: float, rss1: float, duration: float
) -> int:
    internal = metric(text, "gaikan_internal_errors_total")
    five = sum(
        float(v)
        for v in re.findall(
            r'^gaikan_http_requests_total\{[^}]*status="5\d\d"\} (\S+)$', text, re.M
        )
    )
    lat = np.array(st.latencies) * 1000 if st.latencies else np.array([np.nan])
    print(
        f"  answered requests {st.requests} ({st.requests / duration:.1f}/s); "
        f"statuses, stalled included: {st.statuses}"
    )
    print(
        f"  p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms "
        "(requests that were not stalled)"
    )
    print(f"  good images {st.good_images}: correct {st.good_images - st.wrong}, wrong {st.wrong}")
    print(f"  bad files: 4xx or per-file error {st.bad_ok}, scored anyway {st.bad_missed}")
    print(f"  stalled uploads {st.stalled}: 408 within the deadline + 2 s {st.stalled_408}")
    print(
        f"  5xx on the server {five:g}, client-side errors {st.errors}, internal errors "
        f"{internal:g}, tracebacks in log {tb}, server up at the end {up}"
    )
    print(f"  RSS MB {rss0:.1f} -> {rss1:.1f}")
    for n in st.notes + st.stalled_late:
        print("  !", n)
    failures = st.wrong + st.bad_missed + st.errors + (not up) + (internal != 0) + (five != 0) + tb
    failures += st.stalled - st.stalled_408
    print("PASS" if failures == 0 else f"FAIL ({failures} problems)")
    return 0 if failures == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--clients", default="8,32", help="concurrent clients per phase")
    ap.add_argument("--sizes", default="100,256")
    ap.add_argument("--workers", type=int, default=None, help="server scoring threads")
    ap.add_argument("--fault-clients", type=int, default=8)
    ap.add_argument("--max-upload-mb", type=float, default=2.0)
    ap.add_argument("--no-fault", action="store_true")
    ap.add_argument(
        "--soak",
        action="store_true",
        help="only the soak: 32 clients, 10 %% bad and 10 %% stalled uploads (see soak())",
    )
    ap.add_argument("--read-timeout", type=float, default=15.0, help="server read deadline, s")
    ap.add_argument(
        "--db",
        default=None,
        help="also run every phase recording: 'sqlite' (a fresh file per phase) or a database "
        "URL; compared with --no-record",
    )
    ap.add_argument("--keep", default="ng", choices=["ng", "all", "none"], help="with --db")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --db: alternate no-record / recording phases this many times (noisy hosts)",
    )
    args = ap.parse_args(argv)
    if args.soak:
        return soak(args)
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]

    import httpx

    print(
        f"gaikan serve load test: loopback, {os.cpu_count()} CPUs visible, "
        f"{args.duration:g} s per phase, server workers={args.workers or 'default'}"
    )
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="gaikan-load-") as tmp:
        work = Path(tmp)
        built = {s: build(s, work) for s in sizes}
        modes = ["none"] if args.db is None else ["none", args.db]
        checks = []
        runs = [(s, m, k) for s in sizes for k in range(args.rounds) for m in modes]
        for size, mode, k in runs:
            model, uploads = built[size]
            db = None
            if mode != "none":
                db = str(work / f"records-{size}-{k}.db") if mode == "sqlite" else mode
            # every simulated line PC posts from 127.0.0.1: lift the per-address cap
            extra: tuple[str, ...] = ("--max-uploads-per-client", "256")
            extra += ("--no-record",) if db is None else ("--db", db, "--keep", args.keep)
            log = work / f"server-{size}-{mode.split(':')[0]}.log"
            srv = Server(model, args.workers, args.max_upload_mb, log, extra)
            answered: list[tuple[int, str]] = []
            try:
                srv.wait_up()
                answered += warm_up(srv, uploads)
                rss_warm = srv.rss_mb()
                for c in clients:
                    rss0 = srv.rss_mb()
                    cpu0, kids0 = srv.cpu_s()
                    own0 = time.process_time()
                    st = drive(srv.url, uploads, c, args.duration, seed=c)
                    own1 = time.process_time()
                    cpu1, kids1 = srv.cpu_s()
                    answered += st.answered
                    rss1 = srv.rss_mb()
                    per = 1e3 / max(st.requests, 1)  # CPU ms per answered request
                    lat = np.array(st.latencies) * 1000 if st.latencies else np.array([np.nan])
                    srv_ms = np.array(st.server_ms) if st.server_ms else np.array([np.nan])
                    rows.append(
                        (
                            f"{size}x{size}",
                            "no record" if db is None else mode.split(":")[0],
                            c,
                            st.requests,
                            st.requests / args.duration,
                            np.percentile(lat, 50),
                            np.percentile(lat, 99),
                            st.errors + st.wrong,
                            rss_warm,
                            rss0,
                            rss1,
                            np.percentile(srv_ms, 50),
                            np.percentile(srv_ms, 99),
                            (cpu1 - cpu0) * per,
                            (kids1 - kids0) * per,
                            (own1 - own0) * per,
                        )
                    )
                    failures += st.errors + st.wrong
                    for n in st.notes:
                        print("  !", n)
                text = httpx.get(srv.url + "/metrics").text
                internal = metric(text, "gaikan_internal_errors_total")
                if internal:
                    failures += 1
                    print(f"  ! internal errors on the server: {internal:g}")
            finally:
                srv.stop()
            tb = srv.log.read_text(errors="replace").count("Traceback")
            if tb:
                failures += 1
                print(f"  ! {tb} tracebacks in the server log")
            if db is not None:
                n_rows, n_ans, problem = check_recorded(db, answered, fresh=mode == "sqlite")
                checks.append((size, mode.split(":")[0], n_rows, n_ans, problem))
                failures += bool(problem)

        print()
        head = (
            "image",
            "db",
            "clients",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "RSS after warm-up MB",
            "RSS phase start MB",
            "RSS phase end MB",
            "scoring p50/p99 ms",
            "CPU ms/req server + writer, clients",
        )
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print(
                f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.1f} | "
                f"{r[7]} | {r[8]:.1f} | {r[9]:.1f} | {r[10]:.1f} | {r[11]:.1f} / {r[12]:.1f} | "
                f"{r[13]:.2f} + {r[14]:.2f}, {r[15]:.2f} |"
            )
        print(
            "(p50/p99: client-side latency; scoring: the server's pool work per request, "
            "elapsed_ms; errors: non-200, transport errors and wrong results; CPU: user + "
            "system seconds of the server process, of its children (the records writer) "
            "and of this load generator during the phase, per answered request)"
        )
        for size, mode, n_rows, n_ans, problem in checks:
            print(
                f"records ({size}x{size}, {mode}): {n_ans} answered files (warm-up included), "
                f"{n_rows} rows in the database; every answered id present with the digest sent: "
                + (problem or "yes")
            )

        if not args.no_fault:
            size = sizes[0]
            model, uploads = built[size]
            mix = fault_uploads(uploads, args.max_upload_mb, size)
            srv = Server(
                model,
                args.workers,
                args.max_upload_mb,
                work / "server-fault.log",
                ("--max-uploads-per-client", "256"),
            )
            try:
                srv.wait_up()
                warm_up(srv, uploads)
                rss = [srv.rss_mb()]
                st = Stats()
                for k in range(3):  # in thirds, to see whether RSS keeps growing
                    part = drive(srv.url, mix, args.fault_clients, args.duration / 3, seed=99 + k)
                    rss.append(srv.rss_mb())
                    for f in ("latencies", "server_ms", "notes"):
                        getattr(st, f).extend(getattr(part, f))
                    for f in ("requests", "errors", "wrong", "bad_ok", "bad_missed", "good_images"):
                        setattr(st, f, getattr(st, f) + getattr(part, f))
                up = srv.alive()
                text = httpx.get(srv.url + "/metrics").text
                internal = metric(text, "gaikan_internal_errors_total")
                five = sum(
                    float(v)
                    for v in re.findall(
                        r'^gaikan_http_requests_total\{[^}]*status="5\d\d"\} (\S+)$', text, re.M
                    )
                )
            finally:
                srv.stop()
            tb = srv.log.read_text(errors="replace").count("Traceback")
            n_bad = st.bad_ok + st.bad_missed
            print()
            print(
                f"fault run ({size}x{size}, {args.fault_clients} clients, {args.duration:g} s, "
                f"{len(mix) - 6}:6 good:bad request mix, bad = truncated PNG, text, 30 MP PNG, "
                f"random bytes, {1.5 * args.max_upload_mb:g} MiB body, good+corrupt pair):"
            )
            lat = np.array(st.latencies) * 1000 if st.latencies else np.array([np.nan])
            print(
                f"  requests {st.requests} ({st.requests / args.duration:.1f}/s), "
                f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms"
            )
            print(f"  good images checked {st.good_images}, wrong or missing results {st.wrong}")
            print(
                f"  bad uploads {n_bad} ({100 * n_bad / max(1, n_bad + st.good_images):.1f} % of "
                f"files): 4xx or per-file error {st.bad_ok}, scored anyway {st.bad_missed}"
            )
            print(
                f"  transport errors / unexpected statuses {st.errors}, 5xx on the server {five:g}, "
                f"internal errors {internal:g}, tracebacks in log {tb}"
            )
            print(
                f"  server up at the end: {up}; RSS MB after warm-up and after each third: "
                + " -> ".join(f"{v:.1f}" for v in rss)
            )
            for n in st.notes:
                print("  !", n)
            failures += (
                st.wrong + st.bad_missed + st.errors + (not up) + (internal != 0) + (five != 0) + tb
            )
    print()
    print("PASS" if failures == 0 else f"FAIL ({failures} problems)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
