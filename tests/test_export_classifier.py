"""gaikan export of classifiers and ensembles (onnx-classifier), and the OpenVINO format."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import plant_classes, tiny_classifier

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnxruntime")

import gaikan
from gaikan.errors import ModelFileError, NotFittedError, ParameterError
from test_export import run_without_torch

pytestmark = pytest.mark.deep

CLASSES = ("bright", "dark", "good")
S = 32


def planted(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(110, 12, (n, S, S))
    y = np.array([CLASSES[i % 3] for i in range(n)])
    return plant_classes(X, y, rng, 7, 90.0, margin=2)[:2]


@pytest.fixture(scope="module")
def data():
    X, y = planted(150, 0)
    Xt, yt = planted(60, 1)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def clf(data):
    torch.set_num_threads(1)
    X, y, *_ = data
    return tiny_classifier().fine_tune(X, y, epochs=6, base_lr=1e-2)


@pytest.fixture(scope="module")
def ensemble(data):
    """Two members comparing with the mean good part and reading a focus window."""
    from gaikan.deep.classify import ClassifierEnsemble

    X, y, *_ = data
    est = tiny_classifier(reference=True, focus=16, valid_frac=0.0, patience=None)
    return ClassifierEnsemble(est, n_members=2).fine_tune(X, y, epochs=3, base_lr=1e-2)


@pytest.fixture(scope="module")
def clf_file(clf, data, tmp_path_factory):
    from gaikan.deep.export_classifier import export_classifier

    path = tmp_path_factory.mktemp("export-clf") / "clf.onnx.gaikan"
    export_classifier(clf, check_images=data[2], num_threads=1).save(path)
    return path


def _assert_same(source, exported, images):
    """Probabilities within 1e-4 relative / 1e-5 absolute; verdicts and classes identical."""
    from gaikan.inspection import Inspector

    a, b = source.predict_proba(images), exported.predict_proba(images)
    assert b.shape == a.shape == (len(images), len(source.classes_))
    assert np.all(np.abs(b - a) <= np.maximum(1e-4 * np.abs(a), 1e-5))
    np.testing.assert_array_equal(exported.predict(images), source.predict(images))
    ra = Inspector(source).judge(images, maps=False)
    rb = Inspector(exported).judge(images)
    assert [r.verdict for r in rb] == [r.verdict for r in ra]
    assert [r.cls for r in rb] == [r.cls for r in ra]
    np.testing.assert_allclose([r.score for r in rb], [r.score for r in ra], rtol=1e-4, atol=1e-5)
    return ra


# -- equality with the torch path ------------------------------------------------------------
def test_classifier_export_predicts_like_torch(clf, clf_file, data):
    _, _, Xt, yt = data
    exported = gaikan.load(clf_file)
    assert type(exported).__name__ == "OnnxClassifier" and exported.kind == "onnx-classifier"
    assert exported.classes_.tolist() == clf.classes_.tolist()
    assert exported.good_class_ == "good" and exported.input_shape_ == [S, S]
    assert exported.source_kind_ == "classifier" and exported.n_members_ == 1
    assert exported.export_info_["format"] == "onnx" and exported.export_info_["check"]["ok"]
    ra = _assert_same(clf, exported, Xt)
    # not vacuous: the classifier learned the planted defects (both verdicts occur)
    assert clf.score(Xt, yt) >= 0.8
    assert {"ok", "defect"} <= {r.verdict for r in ra}


def test_ensemble_with_reference_and_focus_exports_equal(ensemble, data, tmp_path):
    from gaikan.deep.export_classifier import export_classifier

    _, _, Xt, yt = data
    export_classifier(ensemble, check_images=Xt).save(tmp_path / "ens.gaikan")
    exported = gaikan.load(tmp_path / "ens.gaikan")
    assert exported.source_kind_ == "classifier-ensemble" and exported.n_members_ == 2
    assert exported.source_params_["estimator"]["focus"] == 16
    _assert_same(ensemble, exported, Xt)
    assert ensemble.score(Xt, yt) >= 0.6


def test_exported_classifier_interface(clf_file, data):
    _, _, Xt, _ = data
    exp = gaikan.load(clf_file)
    maps = exp.explain(Xt[:3])
    assert maps.shape == (3, S, S) and not maps.any()  # explanations are not exported
    with pytest.raises(ParameterError, match="training size"):
        exp.predict_proba(np.zeros((1, 16, 16)))
    with pytest.raises(ParameterError, match="grey"):
        exp.predict_proba(np.zeros((1, S, S, 3)))
    with pytest.raises(ParameterError, match="cannot be trained"):
        exp.fine_tune(Xt, np.zeros(len(Xt)))
    with pytest.raises(NotFittedError):
        type(exp)().predict_proba(Xt)


def test_export_refuses_what_it_cannot_export(clf_file, data):
    from gaikan.deep.classify import Classifier
    from gaikan.deep.export import export_model

    with pytest.raises(NotFittedError):
        export_model(Classifier())
    with pytest.raises(ParameterError, match="already exported"):
        export_model(gaikan.load(clf_file))


def test_a_damaged_classifier_graph_is_a_model_file_error(clf_file, tmp_path):
    from gaikan.modelfile import read_model, write_model

    mf = read_model(clf_file)
    mf.blobs["model.onnx"] = b"garbage"
    write_model(tmp_path / "bad.gaikan", mf)  # valid checksums, broken graph
    with pytest.raises(ModelFileError, match="ONNX"):
        gaikan.load(tmp_path / "bad.gaikan")
    mf.meta["format"] = "tflite"
    write_model(tmp_path / "fmt.gaikan", mf)
    with pytest.raises(ModelFileError, match="unknown exported graph format"):
        gaikan.load(tmp_path / "fmt.gaikan")


def test_cli_exports_a_classifier(clf, data, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from gaikan.cli.export import export

    clf.save(tmp_path / "clf.gaikan")
    check = tmp_path / "check"
    check.mkdir()
    for i, img in enumerate(data[2][:9]):
        Image.fromarray(img.astype(np.uint8)).save(check / f"{i}.png")
    out = tmp_path / "clf.onnx.gaikan"
    r = CliRunner().invoke(
        export, [str(tmp_path / "clf.gaikan"), "-o", str(out), "--check", str(check)]
    )
    assert r.exit_code == 0, r.output
    assert "checked on 9 images: probability error" in r.output
    exp = gaikan.load(out)
    assert exp.kind == "onnx-classifier" and exp.export_info_["check"]["n"] == 9
    r = CliRunner().invoke(export, [str(out), "-o", str(tmp_path / "again.gaikan")])
    assert r.exit_code == 4 and "already exported" in r.output


# -- OpenVINO ----------------------------------------------------------------------------------
def test_openvino_classifier_equal(clf, data, tmp_path):
    pytest.importorskip("openvino")
    from gaikan.deep.export_classifier import export_classifier

    _, _, Xt, _ = data
    export_classifier(clf, fmt="openvino", check_images=Xt).save(tmp_path / "ov.gaikan")
    exported = gaikan.load(tmp_path / "ov.gaikan")
    assert exported.format_ == "openvino"
    from gaikan.modelfile import read_model

    assert set(read_model(tmp_path / "ov.gaikan").blobs) == {"model.xml", "model.bin"}
    _assert_same(clf, exported, Xt)
    # and without torch: OpenVINO alone runs it
    np.save(tmp_path / "x.npy", Xt)
    loaded = run_without_torch(
        f"""
        import json, numpy as np, gaikan
        clf = gaikan.load({str(tmp_path / "ov.gaikan")!r})
        np.save({str(tmp_path / "p.npy")!r}, clf.predict_proba(np.load({str(tmp_path / "x.npy")!r})))
        print(json.dumps(sorted(m for m in sys.modules
              if m.split(".")[0] in ("torch", "timm") and sys.modules[m] is not None)))
        """
    )
    assert loaded == []
    a = clf.predict_proba(Xt)
    assert np.all(np.abs(np.load(tmp_path / "p.npy") - a) <= np.maximum(1e-4 * np.abs(a), 1e-5))


def test_openvino_detector_equal(tmp_path):
    pytest.importorskip("openvino")
    from gaikan.deep import PaDiM
    from gaikan.deep.export import export_detector
    from test_export import _assert_equal, _plant, _texture

    rng = np.random.default_rng(7)
    train = _texture(rng, 20)
    test = np.concatenate([_texture(rng, 4), _plant(rng, _texture(rng, 4))])
    det = PaDiM(num_threads=1, n_features=24).fit(train)
    export_detector(det, fmt="openvino", check_images=test).save(tmp_path / "pd.gaikan")
    exported = gaikan.load(tmp_path / "pd.gaikan")
    assert exported.kind == "onnx-detector" and exported.format_ == "openvino"
    a = _assert_equal(det, exported, test)
    assert a.is_defect[4:].sum() >= 3  # the comparison is not vacuous


def test_openvino_refuses_soart_deep(tmp_path):
    from gaikan.deep import SOARTDeep
    from gaikan.deep.export import export_detector
    from test_export import _texture

    det = SOARTDeep(num_threads=1, stages=("soart3",)).fit(_texture(np.random.default_rng(0), 12))
    with pytest.raises(ParameterError, match="format onnx"):
        export_detector(det, fmt="openvino")


def test_openvino_missing_is_a_clear_error(clf, monkeypatch):
    from gaikan.deep.export_classifier import export_classifier

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ParameterError, match=r"gaikan\[openvino\]"):
        export_classifier(clf, fmt="openvino")


# -- without torch -----------------------------------------------------------------------------


def test_torch_free_classifier_and_inspect(clf, clf_file, data, tmp_path):
    """A subprocess where torch cannot be imported predicts and inspects the exported file."""
    from PIL import Image

    from gaikan.inspection import Inspector
    from gaikan.io import find_images, load_images

    _, _, Xt, _ = data
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, img in enumerate(Xt[:24]):
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:02d}.png")
    files = find_images([str(folder)])
    images = load_images(files, (S, S)).images
    ref = Inspector(clf).judge(images, [f.name for f in files], maps=False)
    np.save(tmp_path / "images.npy", images)
    status = run_without_torch(
        f"""
        import json
        import numpy as np
        import gaikan
        clf = gaikan.load({str(clf_file)!r})
        np.save({str(tmp_path / "proba.npy")!r},
                clf.predict_proba(np.load({str(tmp_path / "images.npy")!r})))
        from gaikan.cli import main
        try:
            main(["inspect", {str(clf_file)!r}, {str(folder)!r}, "-o", {str(tmp_path / "out")!r}])
        except SystemExit as e:
            code = e.code
        print(json.dumps({{"code": code, "torch": sorted(m for m in sys.modules
              if m.split(".")[0] in ("torch", "timm") and sys.modules[m] is not None)}}))
        """
    )
    assert status == {"code": 0, "torch": []}
    proba = np.load(tmp_path / "proba.npy")
    a = clf.predict_proba(images)
    assert np.all(np.abs(proba - a) <= np.maximum(1e-4 * np.abs(a), 1e-5))
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert len(rows) == len(files)
    for r in ref:
        row = rows[r.file]
        assert row["verdict"] == r.verdict
        assert float(row["score"]) == pytest.approx(r.score, rel=1e-4, abs=1e-5)
    assert {r.verdict for r in ref} == {"ok", "defect"}


def test_serve_opens_an_exported_classifier(clf, clf_file, data):
    """gaikan serve judges an onnx-classifier as the torch Inspector does."""
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from gaikan.inspection import Inspector
    from gaikan.service import create_app
    from test_service import LiveServer, png_bytes

    _, _, Xt, _ = data
    imgs = Xt[:6]
    ref = Inspector(clf).judge(imgs, maps=False)
    files = [("files", (f"{i}.png", png_bytes(im), "image/png")) for i, im in enumerate(imgs)]
    with LiveServer(create_app(str(clf_file))) as live:
        r = httpx.post(live.url + "/v1/inspect?overlay=0", files=files, timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [g["verdict"] for g in got] == [x.verdict for x in ref]
    np.testing.assert_allclose(
        [g["score"] for g in got], [x.score for x in ref], rtol=1e-4, atol=1e-5
    )
