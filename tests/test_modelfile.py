import io
import json
import zipfile

import numpy as np
import pytest

import gaikan
from conftest import structured_images
from gaikan.errors import ModelFileError
from gaikan.modelfile import ModelFile, read_model, write_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.gaikan"
    gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(8)).save(path)
    return path


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def test_round_trip_blobs_and_meta(tmp_path):
    mf = ModelFile(
        kind="soartc",
        params={"a": 1},
        meta={"x": [1, 2]},
        arrays={"w": np.arange(6.0).reshape(2, 3)},
        blobs={"weights.safetensors": b"abc"},
    )
    write_model(tmp_path / "m", mf)
    back = read_model(tmp_path / "m")
    assert back.kind == "soartc" and back.params == {"a": 1} and back.meta == {"x": [1, 2]}
    np.testing.assert_array_equal(back.arrays["w"], mf.arrays["w"])
    assert back.blobs == {"weights.safetensors": b"abc"}


def test_object_arrays_are_refused(tmp_path):
    mf = ModelFile(kind="soartc", params={}, arrays={"o": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ModelFileError, match="object"):
        write_model(tmp_path / "m", mf)


def test_tampered_array_fails_checksum(saved, tmp_path):
    bad = tmp_path / "bad.gaikan"

    def edit(name, data):
        if name == "arrays.npz":
            data = bytearray(data)
            data[-200] ^= 0xFF
            return bytes(data)
        return data

    _rewrite(saved, bad, edit)
    with pytest.raises(ModelFileError, match="checksum mismatch in arrays.npz"):
        gaikan.load(bad)


def test_pickled_array_is_never_loaded(saved, tmp_path):
    # A forged file whose checksums match but whose npz holds a pickle.
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("sbar.npy", buf.getvalue())
    import hashlib

    def edit(name, data):
        if name == "arrays.npz":
            return npz.getvalue()
        if name == "manifest.json":
            m = json.loads(data)
            m["sha256"]["arrays.npz"] = hashlib.sha256(npz.getvalue()).hexdigest()
            return json.dumps(m)
        return data

    bad = tmp_path / "pickle.gaikan"
    _rewrite(saved, bad, edit)
    with pytest.raises(ModelFileError, match="unreadable or unsafe"):
        gaikan.load(bad)


def test_truncated_file(saved, tmp_path):
    bad = tmp_path / "trunc.gaikan"
    bad.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated|not a zip|damaged"):
        gaikan.load(bad)


def test_wrong_version_and_format(saved, tmp_path):
    def bump(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            m["format_version"] = 99
            return json.dumps(m)
        return data

    _rewrite(saved, tmp_path / "v.gaikan", bump)
    with pytest.raises(ModelFileError, match="version 99 is not supported"):
        gaikan.load(tmp_path / "v.gaikan")
    (tmp_path / "text.gaikan").write_text("hello")
    with pytest.raises(ModelFileError, match="not a zip"):
        gaikan.load(tmp_path / "text.gaikan")
    with pytest.raises(ModelFileError, match="no such model file"):
        gaikan.load(tmp_path / "missing.gaikan")


def test_unlisted_member_and_unknown_kind(saved, tmp_path):
    def add(name, data):
        return data

    bad = tmp_path / "extra.gaikan"
    _rewrite(saved, bad, add)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("payload.py", "print('hi')")
    with pytest.raises(ModelFileError, match="unlisted members"):
        gaikan.load(bad)
    mf = ModelFile(kind="nonsense", params={}, arrays={})
    write_model(tmp_path / "k.gaikan", mf)
    with pytest.raises(ModelFileError, match="unknown model kind"):
        gaikan.load(tmp_path / "k.gaikan")


def test_wrong_arrays_for_kind(tmp_path):
    det = gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(8))
    mf = det.to_modelfile()
    mf.meta["image_shape"] = [20, 20]
    write_model(tmp_path / "w.gaikan", mf)
    with pytest.raises(ModelFileError, match="does not fit SOARTC"):
        gaikan.load(tmp_path / "w.gaikan")
