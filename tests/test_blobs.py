"""The kept-picture store: one SQLite file of content-addressed pictures."""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaikan.records import RecordsError
from gaikan.records.blobs import FILE_NAME, BlobStore


@settings(max_examples=30, deadline=None)
@given(datas=st.lists(st.binary(max_size=3000), max_size=6))
def test_pictures_read_back_byte_for_byte_under_their_sha256(tmp_path_factory, datas):
    store = BlobStore(tmp_path_factory.mktemp("b"))
    keys = store.put_many(datas)
    assert keys == [hashlib.sha256(d).hexdigest() for d in datas]  # in order, duplicates too
    for key, data in zip(keys, datas):
        assert store.get(key) == data
    assert sorted(k for k, _, _ in store.entries()) == sorted(set(keys))
    assert sum(size for _, _, size in store.entries()) == sum(len(d) for d in set(datas))
    store.close()


def test_nothing_is_created_until_a_picture_is_stored(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    assert store.get("0" * 64) is None and list(store.entries()) == []
    store.delete("0" * 64)  # gone already: no error
    assert not (tmp_path / "blobs").exists()
    store.put(b"x")
    assert (tmp_path / "blobs" / FILE_NAME).is_file()
    with pytest.raises(ValueError, match="not a picture key"):
        store.get("../../etc/passwd")


def test_storing_again_refreshes_the_age_and_deleting_gives_the_space_back(tmp_path):
    store = BlobStore(tmp_path)
    keys = store.put_many([bytes([i]) * 20_000 for i in range(40)], now=1000.0)
    store.put(bytes([0]) * 20_000)  # the first again: its age restarts
    ages = {k: t for k, t, _ in store.entries()}
    assert ages[keys[0]] > 1000.0 and ages[keys[1]] == 1000.0
    expired = store.select_expired(max_age_s=3600, max_bytes=None, now=5000.0)
    assert sorted(expired) == sorted(keys[1:])
    store.close()  # the last connection checkpoints the WAL into the file
    size = store.file.stat().st_size
    assert size > 40 * 20_000
    store.delete_many(keys[1:])
    assert [k for k, _, _ in store.entries()] == keys[:1]
    store.close()
    assert store.file.stat().st_size < size / 4  # incremental vacuum returned the pages


def test_threads_share_one_store(tmp_path):
    store = BlobStore(tmp_path)
    datas = [[f"{t}-{i}".encode() * 50 for i in range(20)] for t in range(4)]
    errors: list[BaseException] = []

    def work(chunk):
        try:
            for d in chunk:
                assert store.get(store.put(d)) == d
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(list(store.entries())) == 80
    store.close()


def test_a_newer_or_broken_file_is_refused_with_its_name(tmp_path):
    newer = tmp_path / "newer"
    BlobStore(newer).put(b"x")
    with sqlite3.connect(newer / FILE_NAME) as c:
        c.execute("PRAGMA user_version=99")
    with pytest.raises(RecordsError, match=r"newer gaikan.*upgrade gaikan"):
        BlobStore(newer).get("0" * 64)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / FILE_NAME).write_bytes(b"not a database" * 100)
    with pytest.raises(RecordsError, match=f"{FILE_NAME}.*move the file aside"):
        BlobStore(broken).put(b"x")


def test_stores_opening_a_new_file_at_once_all_succeed(tmp_path):
    """Separate stores (as separate processes would) race to create and switch the file to WAL."""
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(k):
        store = BlobStore(tmp_path)
        try:
            barrier.wait()
            assert store.get(store.put(f"p{k}".encode())) == f"p{k}".encode()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(BlobStore(tmp_path).entries())) == 6


def _expired_by_hand(entries, max_age_s, max_bytes, now):
    """The retention rule walked picture by picture, oldest first (the reference)."""
    entries = sorted(entries, key=lambda e: (e[1], e[0]))
    doomed = [k for k, t, _ in entries if max_age_s is not None and now - t > max_age_s]
    if max_bytes is not None:
        kept = [e for e in entries if e[0] not in set(doomed)]
        total = sum(size for _, _, size in kept)
        for key, _, size in kept:
            if total <= max_bytes:
                break
            doomed.append(key)
            total -= size
    return doomed


@settings(max_examples=40, deadline=None)
@given(
    pics=st.lists(st.tuples(st.binary(min_size=1, max_size=60), st.integers(0, 20)), max_size=12),
    max_age=st.one_of(st.none(), st.integers(0, 20)),
    max_bytes=st.one_of(st.none(), st.integers(0, 400)),
)
def test_expiry_query_equals_the_rule_walked_by_hand(tmp_path_factory, pics, max_age, max_bytes):
    store = BlobStore(tmp_path_factory.mktemp("b"))
    for data, t in pics:  # ages with ties: the key breaks them
        store.put_many([data], now=1000.0 + t)
    got = store.select_expired(max_age_s=max_age, max_bytes=max_bytes, now=1020.0)
    assert got == _expired_by_hand(list(store.entries()), max_age, max_bytes, 1020.0)
    store.close()
