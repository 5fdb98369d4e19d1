"""The station's records: the same tests against SQLite and a real PostgreSQL server.

PostgreSQL comes from ``.ci/services.sh`` (``GAIKAN_TEST_PG_URL``, or the
file it writes); each test gets a fresh database.  Without a server the
PostgreSQL cases are skipped with the reason.
"""

import hashlib
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from gaikan.errors import GaikanError, ParameterError
from gaikan.inspection import Inspection
from gaikan.records import (
    HEAD,
    Filters,
    RecordNotFound,
    RecordsError,
    RecordStore,
    Retention,
    parse_bytes,
    record_results,
)
from gaikan.records.schema import current_revision, resolve_url


def pg_base_url():
    """The PostgreSQL test server's URL, from the environment or .ci/services.sh's file."""
    url = os.environ.get("GAIKAN_TEST_PG_URL")
    env = Path(os.environ.get("GAIKAN_CI_DIR", "/tmp/gaikan-ci")) / "services.env"
    if not url and env.is_file():
        for line in env.read_text().splitlines():
            key, _, val = line.partition("=")
            if key == "GAIKAN_TEST_PG_URL":
                url = val.strip()
    return url or None


def pg_database():
    """A context manager: a fresh PostgreSQL database's URL (dropped after), or skip."""
    import contextlib

    @contextlib.contextmanager
    def make():
        base = pg_base_url()
        if not base:
            pytest.skip("no PostgreSQL server (run `source .ci/services.sh` to start one)")
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import OperationalError

        admin = create_engine(resolve_url(base), isolation_level="AUTOCOMMIT")
        name = f"gaikan_t_{uuid.uuid4().hex[:12]}"
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            admin.dispose()
            pytest.skip(f"PostgreSQL at {base} is not reachable: {exc.orig}")
        try:
            yield base.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    return make()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "records.db")
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def store(db_url, tmp_path):
    s = RecordStore(db_url, blob_dir=tmp_path / "blobs", retention=Retention("all"))
    yield s
    s.close()


def ok(file="a.png", score=0.5):
    return Inspection(file, "ok", score=score, threshold=1.0)


def defect(file="b.png", score=2.0):
    return Inspection(file, "defect", score=score, threshold=1.0, map_max=score, peak_row=3)


def _age(store, record_id, **delta):
    """Move a record's time into the past (the store always stamps 'now')."""
    from sqlalchemy import update

    from gaikan.records.models import InspectionRow

    with store.engine.begin() as c:
        when = datetime.now(UTC) - timedelta(**delta)
        c.execute(
            update(InspectionRow).where(InspectionRow.id == record_id).values(created_at=when)
        )


# -- schema ---------------------------------------------------------------------
def test_migrations_from_empty_to_head_match_the_models(db_url, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    from gaikan.records.models import Base

    s = RecordStore(db_url, blob_dir=tmp_path / "b")
    assert current_revision(s.engine) == HEAD
    names = set(inspect(s.engine).get_table_names())
    assert {"inspections", "reviews", "model_versions", "model_activations"} <= names
    with s.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == [], diff  # the models and the migrations describe one schema
    s.add(ok())
    s.close()
    again = RecordStore(db_url, blob_dir=tmp_path / "b")  # opening again migrates nothing
    assert again.count() == 1
    again.close()


def test_a_database_from_a_newer_gaikan_is_refused(db_url, tmp_path):
    from sqlalchemy import text

    RecordStore(db_url, blob_dir=tmp_path / "b").close()
    s = RecordStore(db_url, blob_dir=tmp_path / "b")
    with s.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    s.close()
    with pytest.raises(RecordsError, match="9999"):
        RecordStore(db_url, blob_dir=tmp_path / "b")


def test_sqlite_is_the_default_in_wal_mode(tmp_path, monkeypatch):
    from sqlalchemy import text

    monkeypatch.setenv("GAIKAN_HOME", str(tmp_path / "home"))
    s = RecordStore()
    assert s.url == f"sqlite:///{tmp_path / 'home' / 'records.db'}"
    with s.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    assert s.blobs.root == tmp_path / "home" / "blobs"
    s.close()


def test_bad_urls_and_unreachable_servers_are_user_errors(tmp_path):
    with pytest.raises(ParameterError, match="--db"):
        RecordStore("mysql://x/y")
    with pytest.raises(RecordsError, match="cannot open"):
        RecordStore("postgresql://nobody:pw@127.0.0.1:1/none", blob_dir=tmp_path)


# -- adding and reading ------------------------------------------------------------
def test_add_get_round_trip_with_digest_and_images(store):
    ins = Inspection(
        "part7.png",
        "defect",
        score=0.8,
        threshold=0.5,
        cls="scratch",
        confidence=0.7,
        probabilities={"good": 0.2, "scratch": 0.7, "dent": 0.1},
        map_max=0.8,
        map_mean=0.1,
        peak_row=12,
        peak_col=30,
    )
    image, overlay = b"\x89PNG fake image bytes", b"overlay png"
    rid = store.add(
        ins,
        source="/cam/part7.png",
        station="line1",
        client="tester",
        image_bytes=image,
        overlay_png=overlay,
        model_id="m",
        model_version=3,
        latency_ms=12.5,
    )
    rec = store.get(rid)
    assert rec.digest == hashlib.sha256(image).hexdigest()
    assert (rec.source, rec.station, rec.client) == ("/cam/part7.png", "line1", "tester")
    assert (rec.verdict, rec.cls, rec.peak_row, rec.peak_col) == ("defect", "scratch", 12, 30)
    assert rec.probabilities == {"good": 0.2, "scratch": 0.7, "dent": 0.1}
    assert (rec.model_id, rec.model_version, rec.latency_ms) == ("m", 3, 12.5)
    assert rec.created_at.tzinfo is not None
    assert abs(rec.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert store.image(rid) == image and store.overlay(rid) == overlay
    assert rec.to_json()["final_verdict"] == "defect"
    err = store.get(store.add(Inspection.failed("x.png", "x.png: not an image")))
    assert (err.verdict, err.error, err.score) == ("error", "x.png: not an image", None)
    with pytest.raises(RecordNotFound):
        store.get(10_000)


def test_query_filters_and_paging(store):
    ids = []
    for i in range(12):
        ins = defect(f"d{i}.png") if i % 3 == 0 else ok(f"o{i}.png")
        ins.cls = "scratch" if i % 3 == 0 else None
        ids.append(store.add(ins, station="s1" if i < 6 else "s2"))
    store.add(Inspection.failed("bad.png", "broken"))
    assert store.count() == 13
    pages = [store.query(limit=5, offset=o) for o in (0, 5, 10)]
    got = [r.id for p in pages for r in p]
    assert got == sorted(got, reverse=True) and len(set(got)) == 13  # newest first, no overlap
    assert [r.id for r in store.query(limit=3, newest_first=False)] == ids[:3]
    assert store.count(Filters(verdict="defect")) == 4
    assert store.count(Filters(verdict=["ok", "error"])) == 9
    assert store.count(Filters(cls="scratch", station="s2")) == 2
    assert store.count(Filters(source="o1")) == 3  # o1, o10, o11
    _age(store, ids[0], hours=5)
    assert store.count(Filters(until=datetime.now(UTC) - timedelta(hours=1))) == 1
    assert store.count(Filters(since=datetime.now(UTC) - timedelta(hours=1))) == 12
    with pytest.raises(ParameterError, match="verdict"):
        store.count(Filters(verdict="NG"))


def test_review_override_history_and_filters(store):
    rid = store.add(defect())
    store.add(ok())
    rec = store.review(rid, "ok", note="dust, not a scratch", who="tanaka")
    assert (rec.verdict, rec.review_verdict, rec.final_verdict) == ("defect", "ok", "ok")
    assert rec.reviewed_by == "tanaka" and rec.reviewed_at is not None
    store.review(rid, "defect", who="suzuki")
    hist = store.reviews(rid)
    assert [(h.previous, h.verdict, h.who) for h in hist] == [
        ("defect", "ok", "tanaka"),
        ("ok", "defect", "suzuki"),
    ]
    assert hist[0].note == "dust, not a scratch"
    assert store.count(Filters(reviewed=True)) == 1
    assert store.count(Filters(reviewed=False)) == 1
    with pytest.raises(ParameterError, match="ok or defect"):
        store.review(rid, "maybe")
    with pytest.raises(RecordNotFound):
        store.review(999, "ok")


def test_stats_per_hour_with_reviews(store):
    a = store.add(defect())
    store.add(ok())
    store.add(ok())
    old = store.add(defect())
    store.add(Inspection.failed("x.png", "broken"))
    _age(store, old, hours=3)
    store.review(a, "ok", who="op")
    buckets = store.stats(bucket_s=3600)
    assert len(buckets) == 2
    early, now = (b.to_json() for b in buckets)
    assert (early["n"], early["defect"], early["yield"]) == (1, 1, 0.0)
    assert (now["n"], now["ok"], now["defect"], now["error"]) == (4, 3, 0, 1)
    assert (now["reviewed"], now["overridden"], now["yield"]) == (1, 1, 1.0)
    day = store.stats(bucket_s=86400, origin=datetime.now(UTC) - timedelta(hours=10))
    assert sum(b.n for b in day) == 5 and len(day) == 1


def test_model_versions_register_activate_and_audit(store, tmp_path):
    f1, f2 = tmp_path / "m1.gaikan", tmp_path / "m2.gaikan"
    f1.write_bytes(b"model one")
    f2.write_bytes(b"model two")
    v1 = store.use_model("cells", f1, threshold=1.5)
    assert (v1.version, v1.active, v1.threshold) == (1, True, 1.5)
    assert store.use_model("cells", f1).version == 1  # the same file: the same version
    v2 = store.register_model("cells", f2, note="refit from reviewed goods", parent_version=1)
    assert (v2.version, v2.active, v2.parent_version) == (2, False, 1)
    assert store.active_model("cells").version == 1
    store.activate_model("cells", 2, who="lead")
    assert store.active_model("cells").version == 2
    assert [v.active for v in store.model_versions("cells")] == [False, True]
    assert [(a["version"], a["who"]) for a in store.model_activations("cells")] == [
        (1, "station"),
        (2, "lead"),
    ]
    assert store.register_model("other", f1).version == 1  # numbered per model id
    with pytest.raises(ParameterError, match="no version 7"):
        store.activate_model("cells", 7)


def test_concurrent_adders_lose_nothing(store):
    def add_many(k):
        for i in range(25):
            store.add(ok(f"t{k}-{i}.png"), image_bytes=f"{k}-{i}".encode())

    threads = [threading.Thread(target=add_many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 100
    assert len({r.digest for r in store.query(limit=200)}) == 100


def test_journal_and_outbox(store):
    a = store.add(ok(), source="/in/a.png", image_bytes=b"a", dest="/in/ok/a.png")
    b = store.add(defect(), source="/in/b.png", image_bytes=b"b")
    digest = hashlib.sha256(b"a").hexdigest()
    assert store.pending_move("/in/a.png", digest).id == a
    assert store.pending_move("/in/a.png", "0" * 64) is None
    assert [r.id for r in store.unmoved("/in/")] == [a]
    store.mark_moved(a)
    assert store.pending_move("/in/a.png", digest) is None and store.unmoved("/in/") == []
    assert [r.id for r in store.unpublished()] == [a, b] and store.outbox_size() == 2
    store.mark_published([a])
    assert [r.id for r in store.unpublished()] == [b]


# -- retention ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("keep", "kept"),
    [("ng", {"defect", "error"}), ("all", {"ok", "defect", "error"}), ("none", set())],
)
def test_keep_policy(keep, kept, tmp_path):
    s = RecordStore(tmp_path / "r.db", retention=Retention(keep))
    for ins in (ok(), defect(), Inspection.failed("e.png", "bad")):
        rid = s.add(
            ins, image_bytes=ins.verdict.encode() * 10, overlay_png=b"o" + ins.verdict.encode()
        )
        rec = s.get(rid)
        assert rec.image_available == (ins.verdict in kept)
        assert (s.image(rid) is not None) == (ins.verdict in kept)
        assert rec.digest == hashlib.sha256(ins.verdict.encode() * 10).hexdigest()  # always
    s.close()


def test_prune_by_age_and_size_keeps_the_records(db_url, tmp_path):
    s = RecordStore(db_url, blob_dir=tmp_path / "b", retention=Retention("all", max_age_days=1))
    old = s.add(defect(), image_bytes=b"old" * 100)
    new = s.add(defect(), image_bytes=b"new" * 100)
    past = time.time() - 3 * 86400
    s.blobs.set_stored(s.get(old).image_key, past)
    assert s.prune() == 1
    rec = s.get(old)
    assert rec.image_pruned_at is not None and not rec.image_available
    assert s.image(old) is None and s.image(new) == b"new" * 100
    assert not s.blobs.exists(rec.image_key) and s.blobs.exists(s.get(new).image_key)
    s.close()
    sized = RecordStore(db_url, blob_dir=tmp_path / "b", retention=Retention("all", max_bytes=500))
    for i in range(4):
        rid = sized.add(defect(), image_bytes=bytes([i]) * 200)
        key = sized.get(rid).image_key
        sized.blobs.set_stored(key, past + i)  # oldest first
    assert sized.prune() == 3  # 300 + 4 × 200 bytes: the oldest go until 500 are left
    avail = [r.image_available for r in sized.query(limit=10, newest_first=False)]
    assert avail == [False, True, False, False, False, True]
    assert sized.count() == 6
    sized.close()


def test_same_image_twice_is_stored_once(tmp_path):
    s = RecordStore(tmp_path / "r.db", retention=Retention("all"))
    a, b = s.add(defect(), image_bytes=b"same"), s.add(defect(), image_bytes=b"same")
    assert s.get(a).image_key == s.get(b).image_key
    assert len(list(s.blobs.entries())) == 1
    s.close()


def test_retention_rejects_bad_values():
    with pytest.raises(ParameterError, match="--keep"):
        Retention("some")
    with pytest.raises(ParameterError):
        Retention(max_age_days=0)
    assert parse_bytes("2G") == 2 * 10**9 and parse_bytes("500MB") == 5 * 10**8
    with pytest.raises(GaikanError):
        parse_bytes("lots")


def test_record_results_from_a_batch_run(tmp_path):
    from PIL import Image

    import gaikan
    from conftest import structured_images
    from gaikan.inspection import Inspector, inspect_files

    imgs = structured_images(12, seed=0)
    files = []
    for i, im in enumerate(imgs):
        f = tmp_path / f"{i:02d}.png"
        Image.fromarray(im.astype("uint8")).save(f)
        files.append(f)
    det = gaikan.SOARTC(kernel=8, stride=4).fit(imgs[:10])
    s = RecordStore(tmp_path / "r.db", retention=Retention("all"))
    out = tmp_path / "out"
    ids = []
    for batch in inspect_files(Inspector(det), files, overlay_dir=out / "overlays"):
        ids += record_results(s, batch, model_id="m", model_version=1, overlay_root=out)
    assert len(ids) == 12 and s.count() == 12
    rec = s.get(ids[3])
    assert rec.digest == hashlib.sha256(files[3].read_bytes()).hexdigest()
    assert rec.client == "cli" and rec.source == str(files[3])
    assert (
        s.overlay(ids[3])
        == (out / "overlays").joinpath(sorted(os.listdir(out / "overlays"))[3]).read_bytes()
    )
    s.close()
