"""The station's writer process: same rows as the store, and a dead child loses no answer."""

from __future__ import annotations

import hashlib
import os

import pytest

pytest.importorskip("sqlalchemy")

from gaikan.inspection import Inspection
from gaikan.records import RecordsError, RecordStore, Retention
from gaikan.records.writer import WriterProcess


class _KillsTheChild:
    """Unpickling this ends the writer process at once (a crash mid-batch)."""

    def __reduce__(self):
        return (os._exit, (9,))


@pytest.fixture
def store(tmp_path):
    s = RecordStore(tmp_path / "r.db", blob_dir=tmp_path / "blobs", retention=Retention("ng"))
    yield s
    s.close()


@pytest.fixture
def writer(store):
    w = WriterProcess(store.url, store.blobs.root, store.retention)
    yield w
    w.close()


def _entries(n, verdict="defect"):
    out = []
    for i in range(n):
        image, overlay = f"image {i}".encode(), f"overlay {i}".encode()
        ins = Inspection(f"p{i}.png", verdict, score=2.0 + i, threshold=1.0, peak_row=i)
        out.append((ins, dict(source=f"/cam/p{i}.png", image_bytes=image, overlay_png=overlay)))
    return out


def test_rows_and_kept_pictures_match_the_store(store, writer):
    ids = writer.add_many(_entries(3) + _entries(2, verdict="ok"))
    assert ids == sorted(ids) and len(set(ids)) == 5
    recs = [store.get(i) for i in ids]
    assert [r.source for r in recs] == [f"/cam/p{i}.png" for i in (0, 1, 2, 0, 1)]
    assert recs[1].digest == hashlib.sha256(b"image 1").hexdigest()
    assert (recs[2].verdict, recs[2].score, recs[2].peak_row) == ("defect", 4.0, 2)
    # --keep ng: the defects' pictures are on disk, the goods' are not
    assert store.image(ids[0]) == b"image 0" and store.overlay(ids[0]) == b"overlay 0"
    assert store.image(ids[3]) is None and recs[3].image_key is None


def test_a_refused_batch_names_the_cause_and_the_next_one_is_recorded(store, writer):
    ins, kw = _entries(1)[0]
    with pytest.raises(RecordsError, match="unexpected keyword argument 'colour'"):
        writer.add_many([(ins, dict(kw, colour="red"))])
    assert store.count() == 0
    assert len(writer.add_many(_entries(2))) == 2 and writer.starts == 1


def test_a_child_dying_mid_batch_fails_that_batch_only(store, writer):
    writer.add_many(_entries(1))
    ins, kw = _entries(1)[0]
    with pytest.raises(RecordsError, match="writer stopped"):
        writer.add_many([(ins, dict(kw, source=_KillsTheChild()))])
    ids = writer.add_many(_entries(2))  # a new child takes over
    assert writer.starts == 2
    assert store.count() == 3 and [store.get(i).source for i in ids] == [
        "/cam/p0.png",
        "/cam/p1.png",
    ]


def test_a_database_that_cannot_be_opened_is_reported(tmp_path):
    w = WriterProcess("postgresql+psycopg://nobody@127.0.0.1:1/none", tmp_path, Retention())
    try:
        with pytest.raises(RecordsError, match="cannot open the database"):
            w.add_many(_entries(1))
    finally:
        w.close()


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_recorder_versions_share_one_writer_and_record_alike(store, mode):
    from gaikan.service.recording import Recorder, Upload

    rec = Recorder(store, "line1", "m", 1, writer=mode)
    v2 = rec.for_version(2)
    assert v2.sink is rec.sink  # one writer process (or store) per station, not per version
    try:
        ins, kw = _entries(1)[0]
        up = Upload(ins, kw["image_bytes"], kw["overlay_png"], 3.0)
        (a,), (b,) = rec.record([up], "host"), v2.record([up], "host")
    finally:
        v2.close()
        rec.close()
    with RecordStore(store.url, blob_dir=store.blobs.root) as again:
        ra, rb = again.get(a), again.get(b)
        assert (ra.model_version, rb.model_version) == (1, 2)
        assert (ra.station, ra.client, ra.latency_ms) == ("line1", "host", 3.0)
        assert ra.image_key == rb.image_key == ra.digest  # the picture kept once
        assert again.image(b) == b"image 0" and again.overlay(b) == b"overlay 0"


def test_requests_under_load_share_commits_and_each_gets_its_own_ids(store):
    """At one request per 3 ms (faster than a commit is worth, slower than one takes)."""
    import time

    from gaikan.service.recording import Recorder, Upload

    rec = Recorder(store, "st", None, None, writer="thread")
    n = 100
    try:
        futs = []
        for i in range(n):
            ins, kw = _entries(1)[0]
            up = Upload(ins, f"burst {i}".encode(), kw["overlay_png"], 1.0)
            futs.append(rec.submit([up], "c"))
            time.sleep(0.003)
        ids = [f.result(timeout=30)[0] for f in futs]
    finally:
        rec.close()
    assert len(set(ids)) == n and ids == sorted(ids)
    assert [store.get(i).digest for i in ids] == [
        hashlib.sha256(f"burst {i}".encode()).hexdigest() for i in range(n)
    ]
    # the writer lingers once the pace is known: without it, one commit per request
    assert rec.commits <= 0.7 * n
