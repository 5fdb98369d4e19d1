"""ClassifierEnsemble: members differ only by seed, probabilities are the
members' mean, one shared validation split, one model file (no pickle), and
the CLI / inspect / service paths take it like a single classifier."""

import zipfile

import numpy as np
import pytest

from conftest import tiny_classifier

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

from gaikan.deep.classify import Classifier, ClassifierEnsemble
from gaikan.errors import ModelFileError, NotFittedError, ParameterError
from test_classifier import CLASSES, planted  # the same planted-square parts

pytestmark = pytest.mark.deep


@pytest.fixture(scope="module")
def data():
    X, y, _ = planted(90, seed=0)
    Xt, yt, _ = planted(30, seed=1)
    return X, y, Xt, yt


@pytest.fixture(scope="module")
def ens(data):
    X, y, *_ = data
    # epochs positionally, as Classifier.fine_tune takes them
    return ClassifierEnsemble(tiny_classifier(random_state=3), n_members=3).fine_tune(
        X, y, 4, base_lr=1e-2
    )


def test_members_are_the_recipe_with_successive_seeds(ens, data):
    X, y, Xt, _ = data
    assert [m.random_state for m in ens.members_] == [3, 4, 5]
    assert all(type(m) is Classifier and m.image_size == 48 for m in ens.members_)
    assert ens.estimator.random_state == 3 and not hasattr(ens.estimator, "model_")
    # member 0 is exactly what the single recipe trains
    single = tiny_classifier(random_state=3).fine_tune(X, y, epochs=4, base_lr=1e-2, progress=False)
    np.testing.assert_allclose(
        ens.members_[0].predict_proba(Xt), single.predict_proba(Xt), atol=1e-6
    )
    # members differ (seed), so averaging means something
    p = [m.predict_proba(Xt) for m in ens.members_]
    assert not np.allclose(p[0], p[1], atol=1e-4)


def test_probabilities_are_the_members_mean(ens, data):
    _, _, Xt, yt = data
    P = ens.predict_proba(Xt)
    np.testing.assert_allclose(P, np.mean([m.predict_proba(Xt) for m in ens.members_], 0))
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-6)
    assert ens.predict(Xt).tolist() == ens.classes_[P.argmax(1)].tolist()
    assert ens.score(Xt, yt) >= 0.9  # the toy members learned the planted squares
    assert ens.classes_.tolist() == list(CLASSES) and ens.good_class_ == "good"


def test_one_validation_split_shared_by_all_members(ens):
    assert ens.n_valid_ == len(ens.valid_idx_) == 18 and ens.n_train_ == 72
    for m in ens.members_:
        assert m.n_train_ == 72 and m.n_valid_ == 18
    assert ens.fit_time_ == pytest.approx(sum(m.fit_time_ for m in ens.members_))
    assert ens.history_ is ens.members_[0].history_
    assert len(ens.history_) == 5  # 1 frozen + 4 epochs, given positionally


def test_explain_maps_every_member_at_the_ensemble_prediction(ens, data, monkeypatch):
    Xt = data[2]
    seen = []
    orig = Classifier.explain

    def spy(self, X, method=None, target=None, **kw):
        seen.append(np.asarray(target).tolist())
        return orig(self, X, method=method, target=target, **kw)

    monkeypatch.setattr(Classifier, "explain", spy)
    maps = ens.explain(Xt[:6])
    assert maps.shape == (6, 32, 32) and np.isfinite(maps).all()
    np.testing.assert_allclose(maps.reshape(6, -1).max(1), 1.0)
    assert len(seen) == 3 and all(t == ens.predict(Xt[:6]).tolist() for t in seen)


def test_save_load_round_trip_and_registry(ens, data, tmp_path):
    from gaikan.detectors.registry import load

    _, _, Xt, *_ = data
    path = tmp_path / "ens.gaikan"
    ens.save(path)
    names = zipfile.ZipFile(path).namelist()
    assert {"m0.weights.safetensors", "m2.weights.safetensors"} <= set(names)
    assert not any(n.endswith((".pkl", ".pt", ".pth")) for n in names)
    back = load(path)
    assert type(back) is ClassifierEnsemble and len(back.members_) == 3
    np.testing.assert_allclose(back.predict_proba(Xt), ens.predict_proba(Xt), atol=1e-6)
    assert back.valid_idx_.tolist() == ens.valid_idx_.tolist()
    assert back.estimator.random_state == 3
    with pytest.raises(ModelFileError, match="classifier-ensemble"):
        Classifier.load(path)


def test_bad_use_is_refused(data):
    X, y, *_ = data
    with pytest.raises(ParameterError, match="n_members"):
        ClassifierEnsemble(tiny_classifier(), n_members=0).fine_tune(X, y, epochs=1)
    with pytest.raises(ParameterError, match="n_members"):
        ClassifierEnsemble(tiny_classifier(), n_members=2.5).fine_tune(X, y, epochs=1)
    with pytest.raises(ParameterError, match="batch_size"):  # the members' parameters too
        ClassifierEnsemble(tiny_classifier(batch_size=0), n_members=2).fine_tune(X, y, epochs=1)
    with pytest.raises(ParameterError, match="valid_frac"):  # before the shared split
        ClassifierEnsemble(tiny_classifier(valid_frac=1.5), n_members=2).fine_tune(X, y, epochs=1)
    with pytest.raises(ParameterError, match=r"y must have shape"):
        ClassifierEnsemble(tiny_classifier(), n_members=2).fine_tune(X, y[:-1], epochs=1)
    with pytest.raises(TypeError, match="Classifier"):
        ClassifierEnsemble(object()).fine_tune(X, y, epochs=1)
    with pytest.raises(NotFittedError, match="not fitted"):
        ClassifierEnsemble(tiny_classifier()).predict_proba(X)
    with pytest.raises(AttributeError):
        ClassifierEnsemble(tiny_classifier()).integrated_gradients  # noqa: B018


def test_train_cli_members_and_inspect(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from gaikan.cli import cli

    rng = np.random.default_rng(0)
    for cls in ("good", "scratch"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(16):
            img = rng.normal(110, 10, (32, 32))
            if cls == "scratch":
                r = rng.integers(2, 26)
                img[r : r + 4, 3:29] += 100
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    out = tmp_path / "e.gaikan"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            str(tmp_path / "data"),
            "-o",
            str(out),
            "--backbone",
            "test_efficientnet",
            "--no-pretrained",
            "--epochs",
            "1",
            "--size",
            "32",
            "--threads",
            "1",
            "--members",
            "2",
            "--report",
            str(tmp_path / "rep"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "member 2/2" in res.output
    ens = ClassifierEnsemble.load(out)
    assert len(ens.members_) == 2 and [m.random_state for m in ens.members_] == [0, 1]
    assert "confusion matrix" in (tmp_path / "rep" / "index.html").read_text()
    res = CliRunner().invoke(
        cli, ["inspect", str(out), str(tmp_path / "data" / "scratch"), "-o", str(tmp_path / "insp")]
    )
    assert res.exit_code == 0, res.output
    csv = (tmp_path / "insp" / "results.csv").read_text().splitlines()
    assert len(csv) == 17 and csv[0].startswith("file,verdict,score,threshold")


def test_service_serves_an_ensemble(ens, data, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from gaikan.io import decode_image
    from gaikan.service import create_app
    from test_service import LiveServer, png_bytes

    Xt = data[2]
    path = tmp_path / "ens.gaikan"
    ens.save(path)
    with (
        LiveServer(create_app(str(path), workers=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as client,
    ):
        info = client.get("/v1/model").json()
        assert info["kind"] == "classifier" and info["detector"] == "classifier-ensemble"
        assert info["classes"] == list(CLASSES) and info["good_class"] == "good"
        pngs = [png_bytes(x) for x in Xt[:3]]
        r = client.post(
            "/v1/inspect",
            files=[("files", (f"{i}.png", p, "image/png")) for i, p in enumerate(pngs)],
        )
        assert r.status_code == 200, r.text
        res = r.json()["results"]
    pix = np.stack([decode_image(p, "x.png") for p in pngs]).astype(np.float64)
    assert [x["class"] for x in res] == ens.predict(pix).tolist()
    np.testing.assert_allclose(
        [x["confidence"] for x in res], ens.predict_proba(pix).max(1), rtol=1e-6
    )
