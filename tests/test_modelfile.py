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


# -- deterministic bytes ------------------------------------------------------------


def test_same_content_gives_the_same_bytes(tmp_path, monkeypatch):
    import time

    X = structured_images(8)
    real_time = time.time
    paths = []
    for i, fake_now in enumerate((1_000_000_000.0, 1_500_000_000.0)):
        # zip writers stamp the current time; two fits at different times
        monkeypatch.setattr(time, "time", lambda t=fake_now: t)
        paths.append(tmp_path / f"fit{i}.gaikan")
        gaikan.SOARTC(kernel=8, stride=4).fit(X).save(paths[-1])
    monkeypatch.setattr(time, "time", real_time)
    first = paths[0].read_bytes()
    assert paths[1].read_bytes() == first
    # a loaded model saved again is byte-identical too
    gaikan.load(paths[0]).save(tmp_path / "again.gaikan")
    assert (tmp_path / "again.gaikan").read_bytes() == first
    with zipfile.ZipFile(paths[0]) as z:
        assert [i.filename for i in z.infolist()] == ["manifest.json", "params.json", "arrays.npz"]
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        npz = zipfile.ZipFile(io.BytesIO(z.read("arrays.npz")))
        names = npz.namelist()
        assert names == sorted(names) and {i.date_time for i in npz.infolist()} == {
            (1980, 1, 1, 0, 0, 0)
        }


def test_arrays_round_trip_exactly(tmp_path):
    arrays = {
        "f64": np.linspace(0, 1, 12).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "big_endian": np.arange(5, dtype=">i4"),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 3)),
        "bool": np.array([True, False]),
        "strided": np.arange(20.0)[::3],
    }
    write_model(tmp_path / "a.gaikan", ModelFile(kind="soartc", params={}, arrays=arrays))
    back = read_model(tmp_path / "a.gaikan").arrays
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)
    back["f64"][0, 0] = 7.0  # loaded arrays are ordinary writable arrays


def test_model_file_written_by_gaikan_3b9b2b1_still_loads():
    from pathlib import Path

    data = Path(__file__).parent / "data"
    ref = json.loads((data / "soartc_v1_3b9b2b1.json").read_text())
    det = gaikan.load(data / "soartc_v1_3b9b2b1.gaikan")
    assert isinstance(det, gaikan.SOARTC) and det.threshold_ == ref["threshold"]
    scores = det.anomaly_score(structured_images(3, size=32, seed=5))
    np.testing.assert_allclose(scores, ref["anomaly_score"], rtol=1e-9)
    # the old writer's zip came from np.savez with wall-clock timestamps
    with zipfile.ZipFile(data / "soartc_v1_3b9b2b1.gaikan") as z:
        assert z.getinfo("params.json").date_time != (1980, 1, 1, 0, 0, 0)


# -- nothing outside the file, no network ------------------------------------------


def forge(path, kind, params, meta=None):
    """A model file with the given params.json content and valid checksums,
    as a hostile writer would make it (write_model refuses to)."""
    import hashlib

    write_model(path, ModelFile(kind=kind, params={}))
    head = json.dumps({"kind": kind, "params": params, "meta": meta or {}}).encode()
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["sha256"]["params.json"] = hashlib.sha256(head).hexdigest()
    members.update({"manifest.json": json.dumps(manifest).encode(), "params.json": head})
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    return path


LITE = {"backbone": "efficientnet_lite0", "weights_file": None}


@pytest.mark.parametrize(
    "kind, params, meta, match",
    [
        ("padim", {"backbone": "resnet18"}, {}, "not an offline backbone"),
        ("padim", {**LITE, "weights_file": "/etc/passwd"}, {}, "weights_file.*names a file"),
        ("patchcore", {**LITE, "cache_dir": "/tmp"}, {}, "cache_dir"),
        ("soart-deep", {"backbone": "hf-hub:timm/resnet18.a1_in1k"}, {}, "offline backbone"),
        ("padim", {**LITE}, {"backbone": "resnet50"}, r"meta\.backbone"),
        ("classifier", {**LITE, "model_kwargs": {"checkpoint_path": "/x"}}, {}, "checkpoint_path"),
        (
            "classifier",
            {**LITE, "model_kwargs": {"pretrained_cfg_overlay": {"file": "/x"}}},
            {},
            "pretrained_cfg_overlay",
        ),
        ("classifier", {"backbone": "hf-hub:a/b", "pretrained": False}, {}, "offline backbone"),
        ("classifier", {**LITE}, {"arch": "hf-hub:timm/vit_base"}, "plain architecture"),
        ("classifier", {**LITE, "url": "http://example.com/w.pth"}, {}, "url"),
        (
            "classifier-ensemble",
            {"n_members": 2, "estimator": {"kind": "classifier", "params": {"backbone": "vgg16"}}},
            {},
            r"params\.estimator\.params\.backbone",
        ),
        (
            "classifier-ensemble",
            {"n_members": 1, "estimator": {"kind": "classifier", "params": LITE}},
            {"members": [{"params": {**LITE, "weights": "w.pth"}}]},
            r"meta\.members\[0\]\.params\.weights",
        ),
        ("soartc", {"kernel": 8, "hub": "timm"}, {}, "hub"),
    ],
)
def test_parameters_naming_a_network_or_a_path_are_refused_before_any_work(
    kind, params, meta, match, tmp_path, monkeypatch
):
    import socket

    from gaikan.detectors import registry

    def forbidden(*args, **kwargs):
        raise AssertionError(f"not before the offline check: {args}")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(registry, "get_detector_class", forbidden)
    path = forge(tmp_path / "m.gaikan", kind, params, meta)
    with pytest.raises(ModelFileError, match=match) as err:
        gaikan.load(path)
    assert str(path) in str(err.value)
    # and no one writes such a file in the first place
    with pytest.raises(ModelFileError, match=match):
        write_model(tmp_path / "w.gaikan", ModelFile(kind=kind, params=params, meta=meta))
    assert not (tmp_path / "w.gaikan").exists()


@pytest.mark.parametrize(
    "params",
    [
        LITE,
        {"backbone": "EfficientNet-Lite2", "weights_file": None},
        {"backbone": "tf_efficientnet_lite1"},
        # trained from scratch: an architecture only, the weights are in the file
        {"backbone": "test_efficientnet", "pretrained": False, "model_kwargs": {"drop_rate": 0}},
        {"n_members": 2, "estimator": {"kind": "classifier", "params": LITE}},
    ],
)
def test_offline_parameters_are_accepted(params, tmp_path):
    write_model(tmp_path / "m.gaikan", ModelFile(kind="classifier", params=params))
    assert read_model(tmp_path / "m.gaikan").params == params


def test_kind_of_params_and_manifest_must_agree(saved, tmp_path):
    import hashlib

    def edit(name, data):
        if name == "params.json":
            head = json.loads(data)
            head["kind"] = "variants"
            return json.dumps(head).encode()
        return data

    bad = tmp_path / "kind.gaikan"
    _rewrite(saved, bad, edit)
    with zipfile.ZipFile(bad) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["sha256"]["params.json"] = hashlib.sha256(members["params.json"]).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(bad, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
    with pytest.raises(ModelFileError, match="kind 'variants' but the manifest 'soartc'"):
        read_model(bad)


def test_refusing_a_deep_model_file_imports_no_torch(tmp_path):
    import subprocess
    import sys

    path = forge(tmp_path / "m.gaikan", "padim", {"backbone": "resnet18"})
    code = (
        "import sys, gaikan\n"
        "try:\n"
        f"    gaikan.load({str(path)!r})\n"
        "except gaikan.errors.ModelFileError as e:\n"
        "    print('refused', 'not an offline backbone' in str(e))\n"
        "print('torch' in sys.modules, 'timm' in sys.modules, 'gaikan.deep.padim' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused", "True", "False", "False", "False"], out
