"""``gaikan watch``: complete files only, sorted and recorded exactly once, even across SIGKILL."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from click.testing import CliRunner
from PIL import Image

import gaikan
from conftest import plant_defect, structured_images
from gaikan.cli import cli
from gaikan.inspection import Inspection, Inspector
from gaikan.records import RecordStore
from gaikan.watch import Settler, Watcher, open_for_writing
from test_records import pg_database

SRC = Path(gaikan.__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, monkeypatch):
    """The database URL: a SQLite file, or a fresh database on the test PostgreSQL server.

    Kept images go to tmp_path/blobs either way (next to the SQLite file, or
    the data directory for PostgreSQL).
    """
    monkeypatch.setenv("GAIKAN_HOME", str(tmp_path))
    if request.param == "sqlite":
        yield str(tmp_path / "r.db")
        return
    with pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "cells.gaikan"
    gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(12, seed=0)).save(path)
    return path


def png_bytes(img):
    import io

    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def camera_images(n, seed=0):
    """n images, every third one with a defect."""
    good = structured_images(n, seed=seed + 100)
    bad = plant_defect(structured_images(n, seed=seed + 200))[0]
    return [bad[i] if i % 3 == 2 else good[i] for i in range(n)]


def drop(folder, n, seed=0, junk=()):
    """Write n camera images (and junk files) into folder; return {name: digest}."""
    out = {}
    for i, img in enumerate(camera_images(n, seed)):
        data = png_bytes(img)
        (folder / f"cam{seed}_{i:04d}.png").write_bytes(data)
        out[f"cam{seed}_{i:04d}.png"] = hashlib.sha256(data).hexdigest()
    for name in junk:
        (folder / name).write_bytes(b"this is not an image")
        out[name] = hashlib.sha256(b"this is not an image").hexdigest()
    return out


def sorted_files(folder):
    """{name: (sub-folder, digest)} of every file moved under folder/ok|ng|error."""
    out = {}
    for sub in ("ok", "ng", "error"):
        for f in (folder / sub).iterdir():
            assert f.name not in out, f"{f.name} moved twice"
            out[f.name] = (sub, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def assert_exactly_once(folder, db, expected):
    """Every input moved once, recorded once, with the right digest and destination."""
    moved = sorted_files(folder)
    assert set(moved) == set(expected)
    left = [f.name for f in folder.iterdir() if f.is_file()]
    assert not [n for n in left if not n.startswith(".") and not n.endswith(".part")], left
    with RecordStore(db) as s:
        recs = s.query(limit=100_000)
    assert len(recs) == len(expected)
    assert sorted(Path(r.source).name for r in recs) == sorted(expected)
    for r in recs:
        name = Path(r.source).name
        sub, digest = moved[name]
        assert r.digest == expected[name] == digest
        assert r.moved_at is not None and Path(r.dest) == folder / sub / name
        assert sub == {"ok": "ok", "defect": "ng", "error": "error"}[r.verdict]
    return recs


def test_watch_once_sorts_records_and_keeps_ng_images(model, tmp_path, db):
    inbox = tmp_path / "in"
    inbox.mkdir()
    expected = drop(inbox, 9, junk=["broken.png", "notes.txt"])
    (inbox / ".hidden.png").write_bytes(b"x")
    (inbox / "busy.png.part").write_bytes(b"x")
    args = ["watch", str(inbox), "--model", str(model), "--once", "--db", db]
    res = CliRunner().invoke(cli, [*args, "--settle", "0.1", "--station", "line1"])
    assert res.exit_code == 0, res.output
    assert "6 ok, 3 defect, 2 error" in res.output
    recs = assert_exactly_once(inbox, db, expected)
    assert (inbox / ".hidden.png").exists() and (inbox / "busy.png.part").exists()
    with RecordStore(db, blob_dir=tmp_path / "blobs") as s:
        assert {(r.station, r.client, r.model_id, r.model_version) for r in recs} == {
            ("line1", "watch", "cells", 1)
        }
        for r in recs:  # --keep ng: the images of defects and errors, with overlays for defects
            assert (s.image(r.id) is not None) == (r.verdict != "ok")
            assert (s.overlay(r.id) is not None) == (r.verdict == "defect")
        assert "not an image" in next(r.error for r in recs if r.source.endswith("notes.txt"))
        assert s.active_model("cells").version == 1
    again = CliRunner().invoke(cli, [*args, "--settle", "0.1"])
    assert again.exit_code == 0 and "0 ok, 0 defect, 0 error" in again.output


def test_a_reused_file_name_keeps_both_files(model, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    imgs = camera_images(2)
    store = RecordStore(tmp_path / "r.db")
    w = Watcher(inbox, Inspector(gaikan.load(model)), store, settle_s=0.0, poll_s=0.01)
    for img in imgs:
        (inbox / "frame.png").write_bytes(png_bytes(img))
        w.run(once=True)
    assert sorted(p.name for p in (inbox / "ok").iterdir())[-1] == "frame.png"
    assert len(list((inbox / "ok").iterdir())) == 2 and store.count() == 2
    store.close()


def test_settler_needs_an_unchanged_size_for_the_interval(tmp_path):
    now = [0.0]
    s = Settler(1.0, clock=lambda: now[0])
    f = tmp_path / "a.png"
    f.write_bytes(b"12")
    assert s.observe([f]) == []
    now[0] = 0.9
    assert s.observe([f]) == []
    with open(f, "ab") as fh:
        fh.write(b"3")
    now[0] = 1.5
    assert s.observe([f]) == []  # it grew: the interval starts again
    now[0] = 2.6
    assert s.observe([f]) == [f] and s.size(f) == 3
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    s.observe([empty])
    now[0] = 10
    assert s.observe([empty]) == []  # an empty file is never complete


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs Linux /proc")
def test_open_for_writing_sees_writers_not_readers(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    key = {str(f.resolve())}
    with open(f, "rb"):
        assert open_for_writing(key) == set()
    with open(f, "ab"):
        assert open_for_writing(key) == key
    assert open_for_writing(key) == set()


def test_half_written_files_are_never_read(model, tmp_path):
    """A writer appends slowly; another writes it all, then holds it open: both wait."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    slow, held = png_bytes(camera_images(1)[0]), png_bytes(camera_images(2)[1])
    closed_at = {}

    def trickle():
        with open(inbox / "slow.png", "wb") as fh:
            for i in range(0, len(slow), max(1, len(slow) // 12)):
                fh.write(slow[i : i + max(1, len(slow) // 12)])
                fh.flush()
                time.sleep(0.08)
        closed_at["slow"] = datetime.now(UTC)

    def hold():
        with open(inbox / "held.png", "wb") as fh:
            fh.write(held)
            fh.flush()
            time.sleep(1.2)  # complete size, but still open for writing
        closed_at["held"] = datetime.now(UTC)

    store = RecordStore(tmp_path / "r.db")
    w = Watcher(inbox, Inspector(gaikan.load(model)), store, settle_s=0.3, poll_s=0.05)
    stop = threading.Event()
    watcher = threading.Thread(target=w.run, args=(stop,))
    writers = [threading.Thread(target=trickle), threading.Thread(target=hold)]
    watcher.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    deadline = time.monotonic() + 10
    while store.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    watcher.join()
    recs = {Path(r.source).name: r for r in store.query()}
    assert set(recs) == {"slow.png", "held.png"}
    assert recs["slow.png"].digest == hashlib.sha256(slow).hexdigest()
    assert recs["held.png"].digest == hashlib.sha256(held).hexdigest()
    for name in ("slow", "held"):
        assert recs[f"{name}.png"].verdict != "error"  # never a truncated read
        assert recs[f"{name}.png"].created_at >= closed_at[name]
    store.close()


def test_restart_moves_recorded_files_without_inspecting_them_again(model, tmp_path, db):
    inbox = tmp_path / "in"
    inbox.mkdir()
    expected = drop(inbox, 3)
    store = RecordStore(db)
    a, b, _c = sorted(expected)
    # crashed after the commit, before the move: a recorded, still in the inbox
    store.add(
        Inspection(a, "ok", score=0.1, threshold=1.0),
        source=str(inbox / a),
        image_bytes=(inbox / a).read_bytes(),
        dest=str(inbox / "ok" / a),
    )
    # crashed after the move, before it was marked: b recorded and already in ok/
    (inbox / "ok").mkdir()
    store.add(
        Inspection(b, "ok", score=0.1, threshold=1.0),
        source=str(inbox / b),
        image_bytes=(inbox / b).read_bytes(),
        dest=str(inbox / "ok" / b),
    )
    os.replace(inbox / b, inbox / "ok" / b)
    w = Watcher(inbox, Inspector(gaikan.load(model)), store, settle_s=0.0, poll_s=0.01)
    counts = w.run(once=True)
    assert counts["resumed"] == 1 and counts["ok"] + counts["defect"] == 1  # only c inspected
    store.close()
    assert_exactly_once(inbox, db, expected)


def _watch_process(inbox, model, db, *extra):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    cmd = [sys.executable, "-c", "from gaikan.cli import main; main()", "watch", str(inbox)]
    cmd += ["--model", str(model), "--db", str(db), "--settle", "0.1", "--poll", "0.05", "-q"]
    return subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _recorded(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT count(*) FROM inspections").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_batch_then_restart_accounts_for_every_file_once(model, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    expected = drop(inbox, 80, junk=["bad.png"])
    db = tmp_path / "r.db"
    proc = _watch_process(inbox, model, db)
    deadline = time.monotonic() + 60
    while _recorded(db) < 15 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _recorded(db)
    assert 15 <= killed_at < len(expected), "the kill must land mid-batch"
    rerun = _watch_process(inbox, model, db, "--once")
    _out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    assert_exactly_once(inbox, db, expected)


def test_sigterm_stops_after_the_current_file(model, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    expected = drop(inbox, 4)
    db = tmp_path / "r.db"
    proc = _watch_process(inbox, model, db)
    deadline = time.monotonic() + 60
    while _recorded(db) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"ok" in out
    assert_exactly_once(inbox, db, expected)


def test_a_database_outage_is_waited_out_and_nothing_moves_meanwhile(model, tmp_path):
    from sqlalchemy.exc import OperationalError

    from gaikan.records import RecordsError

    inbox = tmp_path / "in"
    inbox.mkdir()
    expected = drop(inbox, 4)
    store = RecordStore(tmp_path / "r.db")
    real, failures, successes = store.add_many, [], []

    def flaky(entries):
        if len(failures) < 2:
            failures.append(time.monotonic())
            assert not list((inbox / "ok").iterdir()), "a file moved before it was recorded"
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        successes.append(time.monotonic())
        return real(entries)

    store.add_many = flaky
    w = Watcher(inbox, Inspector(gaikan.load(model)), store, settle_s=0.0, poll_s=0.01)
    with pytest.raises(RecordsError, match="server closed the connection"):
        w.run(once=True)  # --once reports it (exit 3), naming the database
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    t.start()
    assert wait_until(lambda: store.count() == 4, 15)
    stop.set()
    t.join()
    assert successes[0] - failures[1] >= 0.9  # retried after the back-off pause, not at once
    store.close()
    assert_exactly_once(inbox, tmp_path / "r.db", expected)


def wait_until(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)
    return cond()
