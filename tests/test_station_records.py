"""The station remembers: `gaikan serve --db` records every answered inspection
before answering, and serves the records back (list, one, image, overlay,
review, stats, CSV, OpenAPI).  Real uvicorn on 127.0.0.1 and httpx, against
SQLite and (where ``.ci/services.sh`` started one) PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import gaikan
from gaikan.records import Filters, RecordStore
from gaikan.service import create_app
from test_service import LiveServer, png_bytes

pytestmark = pytest.mark.serve

SIZE = 48
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- helpers
def parts_image(seed: int, defect: bool = False) -> np.ndarray:
    """A structured 8-bit grey part; ``defect`` plants a bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = 90 + 60 * (((yy // 8) + (xx // 8)) % 2) + 20 * np.sin(xx / 5.0)
    img = base * rng.uniform(0.97, 1.03) + rng.normal(0, 3.0, (SIZE, SIZE))
    if defect:
        img[20:28, 14:22] += 90
    return np.clip(np.rint(img), 0, 255)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    good = np.stack([parts_image(s) for s in range(12)])
    path = tmp_path_factory.mktemp("model") / "part.gaikan"
    gaikan.SOARTC(kernel=8, stride=4).fit(good).save(path)
    return path


def station(model_file, db, **kw):
    kw.setdefault("workers", 2)
    kw.setdefault("max_uploads_per_client", 16)
    kw.setdefault("keep", "all")
    return LiveServer(create_app(str(model_file), db=db, station="line1-st3", **kw))


def post(client, files: list[tuple[str, bytes]], **params):
    return client.post(
        "/v1/inspect",
        params=params,
        files=[("files", (name, data, "image/png")) for name, data in files],
    )


GOOD = png_bytes(parts_image(100))
BAD = png_bytes(parts_image(101, defect=True))


# ---------------------------------------------------------------- tests
def test_answer_and_record_agree(model_file, db_url):
    """Every file of a request is recorded (errors too) with what the answer said."""
    files = [("good.png", GOOD), ("bad.png", BAD), ("junk.png", b"not an image")]
    with station(model_file, db_url) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = post(c, files)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["verdict"] for x in results] == ["ok", "defect", "error"]
        ids = [x["id"] for x in results]
        assert len(set(ids)) == 3
        one = c.get(f"/v1/inspections/{ids[1]}").json()
        assert one["score"] == results[1]["score"]
        img = c.get(f"/v1/inspections/{ids[1]}/image")
        assert img.status_code == 200 and img.content == BAD
        assert img.headers["content-type"] == "image/png"
        ov = c.get(f"/v1/inspections/{ids[1]}/overlay")
        assert ov.status_code == 200 and ov.content.startswith(PNG_MAGIC)
        assert c.get(f"/v1/inspections/{ids[2]}/overlay").status_code == 404
        assert c.get("/v1/inspections/999999").status_code == 404
        info = c.get("/v1/model").json()
        assert info["active_version"]["model_id"] == "part"
        assert info["active_version"]["version"] == 1
        assert info["record"]["station"] == "line1-st3"
    with RecordStore(db_url) as store:
        assert store.count() == 3
        for res, (name, data) in zip(results, files):
            rec = store.get(res["id"])
            assert rec.source == name
            assert rec.verdict == res["verdict"]
            assert rec.digest == sha(data)
            assert rec.station == "line1-st3"
            assert rec.client == "127.0.0.1"
            assert rec.model_id == "part" and rec.model_version == 1
            assert rec.latency_ms is not None and rec.latency_ms > 0
            if res["verdict"] == "error":
                assert rec.error == res["error"] and rec.score is None
                continue
            assert rec.score == pytest.approx(res["score"], rel=1e-12)
            assert rec.threshold == pytest.approx(res["threshold"], rel=1e-12)
            assert rec.map_max == pytest.approx(res["map"]["max"], rel=1e-12)
            assert (rec.peak_row, rec.peak_col) == (
                res["map"]["peak"]["row"],
                res["map"]["peak"]["col"],
            )
        versions = store.model_versions("part")
        assert len(versions) == 1 and versions[0].active


def test_keep_ng_keeps_no_good_images(model_file, tmp_path):
    db = tmp_path / "r.db"
    with station(model_file, str(db), keep="ng") as srv, httpx.Client(base_url=srv.url) as c:
        ids = [x["id"] for x in post(c, [("g.png", GOOD), ("b.png", BAD)]).json()["results"]]
        assert c.get(f"/v1/inspections/{ids[0]}/image").status_code == 404
        assert "not kept" in c.get(f"/v1/inspections/{ids[0]}/image").json()["error"]
        assert c.get(f"/v1/inspections/{ids[1]}/image").content == BAD
        one = c.get(f"/v1/inspections/{ids[0]}").json()
        assert one["image_url"] is None and one["digest"] == sha(GOOD)


def test_concurrent_clients_every_answer_recorded(model_file, db_url):
    """Many clients at once: every answered file is in the database (count and digests)."""
    rng = random.Random(0)
    pool = [png_bytes(parts_image(200 + i, defect=i % 3 == 0)) for i in range(12)]
    answered: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for j in range(4):
                pick = [pool[rng.randrange(len(pool))] for _ in range(1 + (k + j) % 3)]
                r = post(c, [(f"c{k}-{j}-{i}.png", d) for i, d in enumerate(pick)])
                assert r.status_code == 200, r.text
                with lock:
                    answered.extend((x["id"], sha(d)) for x, d in zip(r.json()["results"], pick))

    with station(model_file, db_url, workers=2) as srv:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(client, range(8)))
    assert len(answered) == sum(1 + (k + j) % 3 for k in range(8) for j in range(4))
    with RecordStore(db_url) as store:
        assert store.count() == len(answered)
        recs = store.query(limit=10_000)
        assert Counter(r.digest for r in recs) == Counter(d for _, d in answered)
        by_id = {r.id: r.digest for r in recs}
        assert all(by_id[i] == d for i, d in answered)


def test_review_filters_and_who(model_file, db_url):
    with station(model_file, db_url) as srv, httpx.Client(base_url=srv.url) as c:
        ids = [
            x["id"]
            for x in post(c, [("g.png", GOOD), ("b.png", BAD), ("b2.png", BAD)]).json()["results"]
        ]
        before = datetime.now(UTC)
        r = c.post(
            f"/v1/inspections/{ids[1]}/review",
            json={"verdict": "ok", "note": "dust on the lens", "who": "tanaka"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["review_verdict"] == "ok" and body["final_verdict"] == "ok"
        assert body["reviewed_by"] == "tanaka"
        assert datetime.fromisoformat(body["reviewed_at"]) >= before.replace(microsecond=0)
        assert body["reviews"][0]["previous"] == "defect"
        assert body["reviews"][0]["note"] == "dust on the lens"
        # without a name and without a token: the client address
        r2 = c.post(f"/v1/inspections/{ids[0]}/review", json={"verdict": "ok"})
        assert r2.json()["reviewed_by"] == "127.0.0.1"

        reviewed = c.get("/v1/inspections", params={"reviewed": 1}).json()
        assert {x["id"] for x in reviewed["items"]} == {ids[0], ids[1]}
        assert reviewed["total"] == 2
        open_ = c.get("/v1/inspections", params={"reviewed": 0}).json()
        assert [x["id"] for x in open_["items"]] == [ids[2]]
        defects = c.get("/v1/inspections", params={"verdict": "defect"}).json()
        assert [x["id"] for x in defects["items"]] == [ids[2]]  # final verdicts
        page = c.get("/v1/inspections", params={"limit": 1, "offset": 1}).json()
        assert page["total"] == 3 and [x["id"] for x in page["items"]] == [ids[1]]
        assert c.get("/v1/inspections", params={"since": "2999-01-01"}).json()["total"] == 0

        assert c.post(f"/v1/inspections/{ids[0]}/review", json={"verdict": "ng"}).status_code == 422
        assert c.post("/v1/inspections/424242/review", json={"verdict": "ok"}).status_code == 404
        bad = c.get("/v1/inspections", params={"since": "yesterday"})
        assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]
        assert c.get("/v1/inspections", params={"verdict": "maybe"}).status_code == 400
    with RecordStore(db_url) as store:
        hist = store.reviews(ids[1])
        assert [(h.verdict, h.previous, h.who) for h in hist] == [("ok", "defect", "tanaka")]


def test_token_guards_review_and_records(model_file, tmp_path):
    db = str(tmp_path / "r.db")
    with station(model_file, db, token="s3cret") as srv:
        auth = {"Authorization": "Bearer s3cret"}
        with httpx.Client(base_url=srv.url, headers=auth) as c:
            rid = post(c, [("b.png", BAD)]).json()["results"][0]["id"]
        with httpx.Client(base_url=srv.url) as anon:
            r = anon.post(f"/v1/inspections/{rid}/review", json={"verdict": "ok"})
            assert r.status_code == 401
            assert anon.get("/v1/inspections").status_code == 401
            assert anon.get(f"/v1/inspections/{rid}/image").status_code == 401
            assert anon.get("/v1/inspections.csv").status_code == 401
            assert anon.get("/openapi.json").status_code == 200  # the schema is public
        with RecordStore(db) as store:
            assert store.get(rid).review_verdict is None  # the refused review changed nothing
        with httpx.Client(base_url=srv.url, headers=auth) as c:
            r = c.post(f"/v1/inspections/{rid}/review", json={"verdict": "ok"})
            assert r.status_code == 200
            assert r.json()["reviewed_by"] == "token@127.0.0.1"
    with RecordStore(db) as store:
        rec = store.get(rid)
        assert rec.review_verdict == "ok" and rec.client == "token@127.0.0.1"


def _set_times(store: RecordStore, times: dict[int, datetime]) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from gaikan.records.models import InspectionRow

    with Session(store.engine) as s, s.begin():
        for rid, when in times.items():
            s.execute(update(InspectionRow).where(InspectionRow.id == rid).values(created_at=when))


def test_stats_per_hour_and_shift(model_file, db_url):
    with station(model_file, db_url) as srv, httpx.Client(base_url=srv.url) as c:
        res = post(c, [("g1.png", GOOD), ("g2.png", GOOD), ("b1.png", BAD), ("b2.png", BAD)])
        ids = [x["id"] for x in res.json()["results"]]
        with RecordStore(db_url) as store:
            _set_times(
                store,
                {
                    ids[0]: datetime(2026, 12, 1, 5, 10, tzinfo=UTC),  # night shift (22-06)
                    ids[1]: datetime(2026, 12, 1, 6, 20, tzinfo=UTC),  # day shift, hour 6
                    ids[2]: datetime(2026, 12, 1, 6, 40, tzinfo=UTC),  # day shift, hour 6
                    ids[3]: datetime(2026, 12, 1, 13, 5, tzinfo=UTC),  # day shift, hour 13
                },
            )
        c.post(f"/v1/inspections/{ids[2]}/review", json={"verdict": "ok"})
        hours = c.get("/v1/stats", params={"bucket": "hour"}).json()
        assert hours["bucket_s"] == 3600
        got = {
            b["start"]: (b["n"], b["ok"], b["defect"], b["overridden"]) for b in hours["buckets"]
        }
        assert got == {
            "2026-12-01T05:00:00+00:00": (1, 1, 0, 0),
            "2026-12-01T06:00:00+00:00": (2, 2, 0, 1),
            "2026-12-01T13:00:00+00:00": (1, 0, 1, 0),
        }
        shifts = c.get("/v1/stats", params={"bucket": "shift", "shift_start": "06:00"}).json()
        assert shifts["bucket_s"] == 8 * 3600
        got = [(b["start"], b["n"], b["yield"], b["defect_rate"]) for b in shifts["buckets"]]
        assert got == [
            ("2026-11-30T22:00:00+00:00", 1, 1.0, 0.0),
            ("2026-12-01T06:00:00+00:00", 3, pytest.approx(2 / 3), pytest.approx(1 / 3)),
        ]
        since = c.get("/v1/stats", params={"bucket": "hour", "since": "2026-12-01T06:00Z"})
        assert sum(b["n"] for b in since.json()["buckets"]) == 3
        assert c.get("/v1/stats", params={"bucket": "week"}).status_code == 422
        assert (
            c.get("/v1/stats", params={"bucket": "shift", "shift_start": "6h"}).status_code == 400
        )


def test_csv_export(model_file, tmp_path):
    db = str(tmp_path / "r.db")
    with station(model_file, db) as srv, httpx.Client(base_url=srv.url) as c:
        files = [("g.png", GOOD), ("b.png", BAD), ("x.png", b"junk")]
        ids = [x["id"] for x in post(c, files).json()["results"]]
        c.post(f"/v1/inspections/{ids[1]}/review", json={"verdict": "ok", "who": "sato"})
        r = c.get("/v1/inspections.csv")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [int(x["id"]) for x in rows] == ids  # oldest first
        assert [x["digest"] for x in rows] == [sha(d) for _, d in files]
        assert [x["verdict"] for x in rows] == ["ok", "defect", "error"]
        assert rows[1]["final_verdict"] == "ok" and rows[1]["reviewed_by"] == "sato"
        assert rows[2]["error"] and rows[2]["score"] == ""
        only = c.get("/v1/inspections.csv", params={"verdict": "error"}).text
        assert [int(x["id"]) for x in csv.DictReader(io.StringIO(only))] == [ids[2]]


def test_openapi_lists_the_api(model_file, tmp_path):
    with station(model_file, str(tmp_path / "r.db")) as srv, httpx.Client(base_url=srv.url) as c:
        doc = c.get("/openapi.json").json()
    paths = doc["paths"]
    for p in (
        "/v1/inspections",
        "/v1/inspections/{record_id}",
        "/v1/inspections/{record_id}/image",
        "/v1/inspections/{record_id}/overlay",
        "/v1/inspections/{record_id}/review",
        "/v1/inspections.csv",
        "/v1/stats",
        "/v1/model",
        "/v1/inspect",
    ):
        assert p in paths, p
    assert "post" in paths["/v1/inspections/{record_id}/review"]


def test_without_db_nothing_is_recorded(model_file):
    with LiveServer(create_app(str(model_file))) as srv, httpx.Client(base_url=srv.url) as c:
        res = post(c, [("g.png", GOOD)]).json()["results"][0]
        assert "id" not in res
        assert c.get("/v1/inspections").status_code == 404


def test_failed_commit_gives_no_verdict(model_file, tmp_path):
    """When the database refuses the rows, the client gets a 503, never a verdict."""
    app = create_app(str(model_file), db=str(tmp_path / "r.db"), workers=1)
    recorder = app.state.recorder

    def refuse(*a, **k):
        raise RuntimeError("disk full")

    recorder.sink.add_many = refuse
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url) as c:
        r = post(c, [("b.png", BAD)])
        assert r.status_code == 503
        assert "results" not in r.json() and "recorded" in r.json()["error"]


def test_a_killed_writer_process_is_replaced(model_file, tmp_path):
    """The rows are committed by a child process; when it is killed the station goes on."""
    import signal

    app = create_app(str(model_file), db=str(tmp_path / "r.db"), workers=1)
    writer = app.state.recorder.sink
    with LiveServer(app) as srv, httpx.Client(base_url=srv.url) as c:
        first = post(c, [("a.png", GOOD)]).json()["results"][0]["id"]
        os.kill(writer._proc.pid, signal.SIGKILL)
        writer._proc.join(10)
        second = post(c, [("b.png", BAD)]).json()["results"][0]["id"]
        assert writer.starts == 2
        ids = [r["id"] for r in c.get("/v1/inspections").json()["items"]]
    assert sorted(ids) == [first, second]


def test_serve_cli_records(model_file, tmp_path):
    """`gaikan serve --db` in its own process: records, --station and --keep."""
    import subprocess
    import sys

    db = tmp_path / "cli.db"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "GAIKAN_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-c", "from gaikan.cli import main; main()", "serve", str(model_file)]
    cmd += ["--port", str(port), "--db", str(db), "--station", "cli-st", "--keep", "none"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as c:
            rid = post(c, [("b.png", BAD)]).json()["results"][0]["id"]
            assert c.get(f"/v1/inspections/{rid}/image").status_code == 404  # --keep none
    finally:
        proc.terminate()
        proc.wait(20)
    with RecordStore(str(db)) as store:
        rec = store.get(rid)
        assert rec.station == "cli-st" and rec.verdict == "defect" and rec.image_key is None
        assert store.count(Filters(station="cli-st")) == 1


def test_kept_overlay_has_default_opacity(model_file, tmp_path):
    """The page asks for alpha=1 and no overlay at all may be asked: the kept one is alpha 0.45."""
    import base64

    with station(model_file, str(tmp_path / "r.db")) as srv, httpx.Client(base_url=srv.url) as c:
        a1 = post(c, [("b.png", BAD)], inline=1, alpha=1).json()["results"][0]
        std = post(c, [("b.png", BAD)], inline=1).json()["results"][0]
        none = post(c, [("b.png", BAD)], overlay=0).json()["results"][0]
        assert "overlay" not in none and "overlay_url" not in none
        default_png = base64.b64decode(std["overlay"].split(",", 1)[1])
        alpha1_png = base64.b64decode(a1["overlay"].split(",", 1)[1])
        assert default_png != alpha1_png
        for res in (a1, std, none):
            assert c.get(f"/v1/inspections/{res['id']}/overlay").content == default_png


def test_serve_cli_refuses_contradictory_record_options(model_file, tmp_path):
    from click.testing import CliRunner

    from gaikan.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["serve", str(model_file), "--no-record", "--db", "x.db"])
    assert res.exit_code == 2 and "--no-record" in res.output
    res = runner.invoke(cli, ["serve", str(model_file), "--keep-size", "lots"])
    assert res.exit_code == 2 and "not a size" in res.output
    assert not (tmp_path / "x.db").exists()
