"""Classifier: schedules (golden), fine-tuning on planted defects, lr_find,
parameter and input checks, model files without pickle (and those of the
release before gaikan.deep.classify), ViT on raw and SOART images."""

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import plant_classes, tiny_classifier

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

from gaikan.deep.classify import (
    Classifier,
    cos_anneal,
    discriminative_lrs,
    inputs,
    one_cycle_schedule,
    stratified_split,
    training,
)
from gaikan.deep.classify.explain import resolve_layer
from gaikan.errors import NotFittedError, ParameterError

pytestmark = pytest.mark.deep

CLASSES = ("bright", "dark", "good")


def planted(n, size=32, seed=0, box=7, delta=90.0):
    """Noisy grey parts; 'bright'/'dark' get a square at a random place."""
    rng = np.random.default_rng(seed)
    X = rng.normal(110, 12, (n, size, size))
    y = np.array([CLASSES[i % 3] for i in range(n)])
    return plant_classes(X, y, rng, box, delta, margin=2)


tiny = tiny_classifier


@pytest.fixture(scope="module")
def data():
    X, y, _m = planted(150, seed=0)
    Xt, yt, mt = planted(60, seed=1)
    return X, y, Xt, yt, mt


@pytest.fixture(scope="module")
def fitted(data):
    X, y, *_ = data
    return tiny().fine_tune(X, y, epochs=6, base_lr=1e-2)


# --------------------------------------------------------------------------- schedules
def test_one_cycle_golden():
    lrs, moms = one_cycle_schedule(10, 1.0, pct_start=0.3, div=25.0, div_final=1e5)
    assert lrs.shape == (10, 1)
    # step 0: lr_max/div and the top momentum
    assert lrs[0, 0] == pytest.approx(0.04)
    assert moms[0] == pytest.approx(0.95)
    # step 3 sits exactly at pct_start: the peak and the lowest momentum
    assert lrs[3, 0] == pytest.approx(1.0)
    assert moms[3] == pytest.approx(0.85)
    # warm-up midpoint (p = 0.1 → q = 1/3): 1 + (0.04 - 1)/2 (1 + cos(pi/3)) = 0.28
    assert lrs[1, 0] == pytest.approx(0.28)
    # annealing: step 5 → q = 0.2/0.7
    q = 0.2 / 0.7
    assert lrs[5, 0] == pytest.approx(1e-5 + (1 - 1e-5) / 2 * (1 + math.cos(math.pi * q)))
    # last step p = 0.9 → q = 6/7, close to lr_max/div_final but not there
    assert lrs[9, 0] == pytest.approx(1e-5 + (1 - 1e-5) / 2 * (1 + math.cos(math.pi * 6 / 7)))
    assert moms[9] == pytest.approx(0.85 + 0.1 / 2 * (1 - math.cos(math.pi * 6 / 7)))
    # rises monotonically to the peak, then falls monotonically
    assert np.all(np.diff(lrs[:4, 0]) > 0) and np.all(np.diff(lrs[3:, 0]) < 0)


def test_one_cycle_groups_scale_together():
    lrs, _ = one_cycle_schedule(7, [1e-4, 1e-3, 1e-2], pct_start=0.25, div=5.0)
    np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 10.0)
    np.testing.assert_allclose(lrs[:, 2] / lrs[:, 1], 10.0)
    assert lrs[0, 2] == pytest.approx(2e-3)


def test_discriminative_lrs_golden():
    np.testing.assert_allclose(discriminative_lrs(2e-3, 100, 3), [2e-5, 2e-4, 2e-3])
    np.testing.assert_allclose(discriminative_lrs(1e-2, 1000, 4), [1e-5, 1e-4, 1e-3, 1e-2])
    assert discriminative_lrs(1e-3, 100, 1).tolist() == [1e-3]


def test_cos_anneal_endpoints():
    assert cos_anneal(2.0, 1.0, 0.0) == pytest.approx(2.0)
    assert cos_anneal(2.0, 1.0, 1.0) == pytest.approx(1.0)
    assert cos_anneal(2.0, 1.0, 0.5) == pytest.approx(1.5)


def test_stratified_split_is_seeded_and_stratified():
    y = np.repeat([0, 1, 2], [10, 20, 5])
    tr, va = stratified_split(y, 0.2, 3)
    tr2, va2 = stratified_split(y, 0.2, 3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert np.bincount(y[va]).tolist() == [2, 4, 1]
    assert sorted(np.r_[tr, va].tolist()) == list(range(y.size))
    assert not np.array_equal(stratified_split(y, 0.2, 4)[1], va)


def test_schedule_applied_during_fine_tune(data, monkeypatch):
    """The optimiser sees the frozen-stage rates, then the discriminative one-cycle."""
    X, y, *_ = data
    seen = []
    orig = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups][::2])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    clf = tiny(valid_frac=0.0, batch_size=50)
    clf.fine_tune(X, y, epochs=2, base_lr=1e-2, freeze_epochs=1, lr_mult=100)
    seen = np.array(seen)  # (steps, groups): 3 steps per epoch
    assert seen.shape == (9, 3)
    frozen, _ = one_cycle_schedule(3, [1e-3, 1e-3, 1e-2], pct_start=0.99, div=25.0)
    np.testing.assert_allclose(seen[:3], frozen)
    unfrozen, _ = one_cycle_schedule(6, [1e-4, 1e-3, 1e-2], pct_start=0.3, div=5.0)
    np.testing.assert_allclose(seen[3:], unfrozen)


def test_layer_groups_and_freezing(fitted):
    model = fitted.model_
    groups = training.layer_groups(model, fitted.n_groups)
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[-1]} == {id(p) for p in model.get_classifier().parameters()}
    training.freeze_body(model, groups, True)
    try:
        bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bn and all(p.requires_grad for m in bn for p in m.parameters())
        assert not model.conv_stem.weight.requires_grad
        assert all(p.requires_grad for p in groups[-1])
    finally:
        training.freeze_body(model, groups, False)


# --------------------------------------------------------------------------- training
def test_fine_tune_learns_planted_defects(fitted, data):
    _, _, Xt, yt, _ = data
    assert fitted.score(Xt, yt) >= 0.9
    proba = fitted.predict_proba(Xt)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert set(fitted.predict(Xt)) <= set(CLASSES)
    h = fitted.history_
    assert [r["stage"] for r in h][:2] == ["frozen", "unfrozen"]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert 0 <= fitted.best_epoch_ < len(h)


def test_fine_tune_is_reproducible(data, fitted):
    X, y, Xt, *_ = data
    again = tiny().fine_tune(X, y, epochs=6, base_lr=1e-2)
    np.testing.assert_allclose(again.predict_proba(Xt), fitted.predict_proba(Xt), atol=1e-6)


def test_early_stopping_restores_best(data):
    X, y, *_ = data
    # a destructive learning rate: the validation loss only gets worse
    clf = tiny(patience=1).fine_tune(X, y, epochs=6, base_lr=5.0, freeze_epochs=1)
    losses = [r["valid_loss"] for r in clf.history_]
    assert len(clf.history_) < 7  # stopped early
    assert clf.best_epoch_ == int(np.argmin(losses))


def test_bad_inputs():
    clf = tiny()
    with pytest.raises(ParameterError, match="two classes"):
        clf.fine_tune(np.zeros((4, 8, 8)), ["a"] * 4)
    with pytest.raises(ParameterError, match="shape"):
        clf.fine_tune(np.zeros((4, 8, 8)), ["a", "b"])
    with pytest.raises(ParameterError, match=r"X\[None\]"):
        clf.fine_tune(np.zeros((8, 8)), ["a"])
    with pytest.raises(NotFittedError):
        clf.predict(np.zeros((1, 8, 8)))
    with pytest.raises(NotFittedError):
        clf.input_pipeline()


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros((0, 8, 8)), "X is empty"),
        (np.zeros((0, 8, 8, 3)), "X is empty"),
        (np.zeros((2, 8, 8, 2)), r"\(n, H, W\) or \(n, H, W, 3\)"),
        (np.zeros((2, 1, 8, 8, 3)), r"\(n, H, W\) or \(n, H, W, 3\)"),
        (np.array([[[1.0, np.nan]]]), "NaN"),
        (np.full((1, 2, 2, 3), np.inf), "NaN or infinite"),
        (np.array([[[object()]]]), "numeric"),
        ([np.zeros((8, 8)), np.zeros((8, 9))], "different shapes"),
    ],
)
def test_image_checks_raise_parameter_errors(X, match):
    """check_X is gaikan's check_images, plus RGB batches; ParameterError is a ValueError."""
    with pytest.raises(ParameterError, match=match):
        inputs.check_X(X)
    with pytest.raises(ValueError, match=match):
        tiny().fine_tune(X, ["a", "b"])


def test_image_checks_accept_grey_rgb_and_lists():
    rgb = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    out = inputs.check_X(rgb)
    assert out.dtype == np.float32 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)
    grey = inputs.check_X([np.ones((4, 5)), np.zeros((4, 5))])
    assert grey.shape == (2, 4, 5) and grey.dtype == np.float32


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"valid_frac": 1.0}, "valid_frac"),
        ({"patience": -1}, "patience"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"hflip": "yes"}, "hflip"),
        ({"max_rotate": -5}, "max_rotate"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"n_groups": 0}, "n_groups"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"precise_bn": 2.5}, "precise_bn"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": (32, "a")}, "image_size"),
        ({"cam_method": "bogus"}, "cam_method"),
        ({"random_state": None}, "random_state"),
        ({"num_threads": -1}, "num_threads"),
        ({"reference": True, "focus": 4}, "focus"),
        ({"focus": 16}, "focus needs reference"),
        ({"model_kwargs": "drop_rate=0"}, "model_kwargs"),
        ({"device": 0}, "device"),
    ],
)
def test_bad_parameters_are_refused_at_fit(params, name, data, monkeypatch):
    """fit refuses a bad parameter by name before any work (no network is built)."""
    X, y, *_ = data
    built = []
    monkeypatch.setattr(Classifier, "_create_model", lambda self, n: built.append(n))
    with pytest.raises(ParameterError, match=name):
        tiny(**params).fine_tune(X, y, epochs=1)
    with pytest.raises(ParameterError, match=name):
        tiny(**params).lr_find(X, y, num_it=2)
    assert built == []


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"epochs": -1}, "epochs"),
        ({"freeze_epochs": 1.5}, "freeze_epochs"),
        ({"base_lr": 0.0}, "base_lr"),
        ({"lr_mult": -10}, "lr_mult"),
        ({"pct_start": 0.0}, "pct_start"),
        ({"div": float("inf")}, "div"),
    ],
)
def test_bad_fit_arguments_are_refused(kw, name, data):
    X, y, *_ = data
    with pytest.raises(ParameterError, match=name):
        tiny().fine_tune(X, y, **kw)


def test_augmentation_respects_switches():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    norm = ([0.5] * 3, [0.5] * 3)
    assert torch.equal(inputs.augment(x, g, inputs.Augmentation(), *norm), x)
    flip = inputs.Augmentation(hflip=True)
    outs = [inputs.augment(x, torch.Generator().manual_seed(s), flip, *norm) for s in range(8)]
    assert all(
        torch.equal(o[i], x[i]) or torch.equal(o[i], x[i].flip(-1)) for o in outs for i in range(2)
    )
    assert any(torch.equal(o[0], x[0].flip(-1)) for o in outs)


def test_lr_find_suggestion_is_sane(data):
    X, y, *_ = data
    res = tiny().lr_find(X, y, num_it=40)
    assert 10 <= len(res.lrs) <= 40
    assert np.all(np.diff(res.lrs) > 0)
    assert 1e-6 < res.suggestion < 1.0
    assert res.lrs[0] <= res.suggestion <= res.lrs[int(np.argmin(res.losses))]
    fig = res.plot()
    assert fig.axes[0].get_xscale() == "log"


# --------------------------------------------------------------------------- model files
def test_save_load_round_trip_without_pickle(fitted, data, tmp_path):
    _, _, Xt, *_ = data
    path = tmp_path / "clf.gaikan"
    fitted.save(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"manifest.json", "params.json", "arrays.npz", "weights.safetensors"} <= names
        for name in names:
            blob = zf.read(name)
            assert not blob.startswith(b"\x80"), f"{name} looks like a pickle"
            assert b"torch._utils" not in blob and b"cpickle" not in blob.lower()
        params = json.loads(zf.read("params.json"))
    assert params["kind"] == "classifier"
    assert params["meta"]["classes"] == list(CLASSES)
    back = Classifier.load(path)
    assert np.array_equal(back.predict_proba(Xt), fitted.predict_proba(Xt))
    assert np.array_equal(back.predict(Xt), fitted.predict(Xt))
    assert back.history_ == fitted.history_
    np.testing.assert_allclose(back.explain(Xt[:3]), fitted.explain(Xt[:3]), atol=1e-6)


def test_default_explanation_is_layercam_at_stride_16(fitted, data):
    _, _, Xt, yt, _mt = data
    assert resolve_layer(fitted.model_, "auto") == "blocks.3"  # test_efficientnet: stride 16
    assert resolve_layer(fitted.model_, None) is None
    d = yt != "good"
    np.testing.assert_allclose(
        fitted.explain(Xt[d][:4]),
        fitted.explain(Xt[d][:4], method="layercam", layer="blocks.3"),
    )
    np.testing.assert_array_equal(  # "auto" names the same layer when a method is given
        fitted.explain(Xt[d][:2], method="gradcam", layer="auto"),
        fitted.explain(Xt[d][:2], method="gradcam", layer="blocks.3"),
    )
    maps = fitted.explain(Xt[d])
    assert maps.shape == (int(d.sum()), 32, 32)
    assert maps.min() >= 0 and np.allclose(maps.reshape(len(maps), -1).max(1), 1.0)


def test_gaikan_load_dispatches(fitted, tmp_path):
    from gaikan.detectors.registry import REGISTRY

    if "classifier" not in REGISTRY:
        pytest.skip("classifier kind not registered yet")
    import gaikan

    path = tmp_path / "c.gaikan"
    fitted.save(path)
    assert isinstance(gaikan.load(path), Classifier)


def test_tampered_model_file_is_refused(fitted, tmp_path):
    from gaikan.errors import ModelFileError

    path = tmp_path / "c.gaikan"
    fitted.save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    w = bytearray(members["weights.safetensors"])
    w[-1] ^= 1
    members["weights.safetensors"] = bytes(w)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(ModelFileError, match="checksum"):
        Classifier.load(path)


# --------------------------------------------------------------------------- ViT
@pytest.mark.parametrize("inp", ["raw", "soart"])
def test_vit_learns_and_round_trips(inp, tmp_path):
    from gaikan.deep.classify import ViTClassifier

    X, y, _ = planted(150, seed=0, delta=70)
    Xt, yt, _ = planted(60, seed=1, delta=70)
    kw = dict(image_size=32, patch_size=4) if inp == "raw" else dict(image_size=16, patch_size=2)
    clf = ViTClassifier(
        inp,
        embed_dim=48,
        depth=2,
        num_heads=2,
        soart_kernel=4,
        soart_stride=2,
        num_threads=1,
        batch_size=16,
        **kw,
    )
    clf.fine_tune(X, y, epochs=10, base_lr=3e-3, freeze_epochs=0)
    acc = clf.score(Xt, yt)
    assert acc >= (0.8 if inp == "soart" else 0.5)
    maps = clf.explain(Xt[:4])
    assert maps.shape == (4, 32, 32)
    assert maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    clf.save(tmp_path / "v.gaikan")
    back = ViTClassifier.load(tmp_path / "v.gaikan")
    assert np.array_equal(back.predict_proba(Xt), clf.predict_proba(Xt))
    np.testing.assert_allclose(back.explain(Xt[:4]), maps, atol=1e-6)


# --------------------------------------------------------------------------- old model files
V0 = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "cls_name"),
    [("classifier", "Classifier"), ("ensemble", "ClassifierEnsemble"), ("vit", "ViTClassifier")],
)
def test_model_files_of_the_previous_release_load_and_predict_the_same(name, cls_name):
    """Files written at 3b9b2b1 (tests/data/make_classifier_v0.py), before the
    classifier was split into gaikan.deep.classify: same probabilities and maps."""
    import gaikan
    from gaikan.modelfile import read_model

    expected = np.load(V0 / "classifier-v0-expected.npz")
    path = V0 / f"{name}-v0.gaikan"
    model = gaikan.load(path)
    assert type(model).__name__ == cls_name
    proba = model.predict_proba(expected["X"])
    # bit-identical on the machine that wrote them; float error allowed for other CPUs/torches
    np.testing.assert_allclose(proba, expected[f"{name}.proba"], rtol=1e-5, atol=1e-6)
    assert proba.argmax(1).tolist() == expected[f"{name}.proba"].argmax(1).tolist()
    maps = model.explain(expected["X"][:3])
    np.testing.assert_allclose(maps, expected[f"{name}.maps"], atol=1e-4)
    # what a file holds did not change: re-saving gives the same members and parameters
    old, new = read_model(path), model.to_modelfile()
    assert (old.kind, sorted(old.arrays), sorted(old.blobs)) == (
        new.kind,
        sorted(new.arrays),
        sorted(new.blobs),
    )
    assert old.params == new.params and sorted(old.meta) == sorted(new.meta)


def test_old_module_paths_still_import():
    """Registries and users import the pre-split paths; they name the same objects."""
    import importlib

    import gaikan.deep
    from gaikan.deep import classify
    from gaikan.detectors.registry import get_detector_class

    old = importlib.import_module("gaikan.deep.classifier")
    for name in old.__all__:
        if name != "TIMM_NAMES":
            assert getattr(old, name) is getattr(classify, name)
    assert importlib.import_module("gaikan.deep.vit").ViTClassifier is classify.ViTClassifier
    ens = importlib.import_module("gaikan.deep.ensemble").ClassifierEnsemble
    assert ens is classify.ClassifierEnsemble
    for name in ("Classifier", "ViTClassifier", "ClassifierEnsemble"):
        assert getattr(gaikan.deep, name) is getattr(classify, name)
    for kind, cls in [
        ("classifier", classify.Classifier),
        ("vit-classifier", classify.ViTClassifier),
        ("classifier-ensemble", classify.ClassifierEnsemble),
    ]:
        assert get_detector_class(kind) is cls and cls.kind == kind


def test_good_class_rule():
    """The one good-class rule (the CLI, the report and the station all use it)."""
    from gaikan.deep.classify import Classifier

    def good(classes, given=None):
        c = Classifier("test_efficientnet", pretrained=False, good_class=given)
        c.classes_ = np.asarray(classes)
        return c.good_class_

    assert good(["bright", "dark", "good"]) == "good"
    assert good(["a", "b", "c"], given="b") == "b"
    assert good(["NG", "OK"]) == "OK"
    assert good(["fail", "pass"]) == "pass"
    assert good(["crack", "dent", "scratch"]) is None
    assert good(["crack", "dent"], given="missing") is None
    assert good([0, 1, 2], given=np.int64(1)) == 1
