"""Reference-aware classifier input and integrated-gradients explanations."""

import numpy as np
import pytest

from conftest import plant_classes, tiny_classifier

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

from gaikan.deep.classify import Classifier, inputs
from gaikan.deep.evaluate import pointing_score
from gaikan.errors import ParameterError

pytestmark = pytest.mark.deep

CLASSES = ("bright", "dark", "good")


def parts(n, seed, size=32, box=7, delta=90.0):
    """A fixed 'part' pattern plus noise; 'bright'/'dark' get a square somewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    part = 100 + 25 * np.sin(xx / 3.0) * np.cos(yy / 4.0)  # same for every part
    X = part + rng.normal(0, 6, (n, size, size))
    y = np.array([CLASSES[i % 3] for i in range(n)])
    return plant_classes(X, y, rng, box, delta, margin=1)


tiny = tiny_classifier


@pytest.fixture(scope="module")
def data():
    X, y, _ = parts(150, 0)
    Xt, yt, mt = parts(60, 1)
    return X, y, Xt, yt, mt


@pytest.fixture(scope="module")
def ref_model(data):
    X, y, *_ = data
    return tiny(reference=True).fine_tune(X, y, epochs=6, base_lr=1e-2)


def test_reference_is_mean_good_training_image(ref_model, data):
    X, y, *_ = data
    train = np.setdiff1d(np.arange(len(X)), ref_model.valid_idx_)
    good = train[y[train] == "good"]
    np.testing.assert_allclose(ref_model.reference_, X[good].mean(0), rtol=1e-6)
    # the network input: (image, reference, 0.5 + image − reference), then normalised
    t = ref_model.input_pipeline().encode(X[:1])
    assert t.shape == (1, 3, 48, 48)
    mean = torch.tensor(ref_model.input_mean_).view(3, 1, 1)
    std = torch.tensor(ref_model.input_std_).view(3, 1, 1)
    raw = (t[0] * std + mean).numpy()
    # channel 2 − channel 0 + channel 1 = 0.5 holds pixel-wise (resizing is linear)
    np.testing.assert_allclose(raw[2] - raw[0] + raw[1], 0.5, atol=1e-5)


def test_reference_model_learns_and_round_trips(ref_model, data, tmp_path):
    _, _, Xt, yt, _ = data
    assert ref_model.score(Xt, yt) >= 0.9
    path = tmp_path / "ref.gaikan"
    ref_model.save(path)
    back = Classifier.load(path)
    assert back.reference is True and back.good_class_ == "good"
    np.testing.assert_array_equal(back.reference_, ref_model.reference_)
    np.testing.assert_allclose(back.predict_proba(Xt), ref_model.predict_proba(Xt), atol=1e-6)


def test_reference_checks_inputs(ref_model, data):
    X, y, *_ = data
    with pytest.raises(ParameterError, match="crop/resize"):
        ref_model.predict(np.zeros((2, 40, 32)))
    with pytest.raises(ParameterError, match="grey"):
        ref_model.predict(np.zeros((2, 32, 32, 3)))
    with pytest.raises(ParameterError, match="grey"):
        tiny(reference=True).fine_tune(np.repeat(X[..., None], 3, -1), y, epochs=1)
    with pytest.raises(ParameterError, match="good_class"):
        tiny(reference=True, good_class="ok").fine_tune(X, y, epochs=1)
    # classes without a good one: the reference comes from X_good
    d = y != "good"
    clf = tiny(reference=True).fine_tune(X[d], y[d], epochs=1, freeze_epochs=0, X_good=X[~d][:10])
    np.testing.assert_allclose(clf.reference_, X[~d][:10].mean(0), rtol=1e-6)


def test_integrated_gradients_completeness(ref_model, data):
    """IG's axiom: attributions sum to f_c(x) − f_c(reference)."""
    Xt = data[2]
    x = Xt[:4]
    tgt = np.array(["bright", "dark", "good", "bright"])
    attr = ref_model.integrated_gradients(
        x, target=tgt, steps=128, smooth=0, part="signed", normalize=False
    )
    assert attr.shape == (4, 32, 32)
    pipe = ref_model.input_pipeline()
    with torch.no_grad():
        ref_model.model_.eval()
        lx = ref_model.model_(pipe.expand(pipe.encode(x))).numpy()
        lr = ref_model.model_(pipe.expand(pipe.encode(ref_model.reference_[None]))).numpy()
    idx = np.searchsorted(ref_model.classes_, tgt)
    want = lx[np.arange(4), idx] - lr[0, idx]
    np.testing.assert_allclose(attr.reshape(4, -1).sum(1), want, rtol=0.05, atol=0.05)


def test_integrated_gradients_point_at_the_defect(ref_model, data):
    _, _, Xt, yt, mt = data
    d = yt != "good"
    maps = ref_model.explain(Xt[d], method="ig", target=ref_model.predict(Xt[d]))
    assert maps.shape == (int(d.sum()), 32, 32)
    assert maps.min() >= 0 and np.allclose(maps.reshape(len(maps), -1).max(1), 1.0)
    # a 7×7 square of 32×32: chance ≈ 5 %
    assert pointing_score(maps, mt[d]) >= 0.9
    # "auto": IG is the default explanation of a reference model
    np.testing.assert_allclose(ref_model.explain(Xt[d][:3]), maps[:3], atol=1e-4)
    with pytest.raises(ParameterError, match="training size"):
        ref_model.integrated_gradients(np.zeros((1, 30, 32)))
    with pytest.raises(ParameterError, match="part"):
        ref_model.integrated_gradients(Xt[:1], part="both")
    with pytest.raises(ParameterError, match="steps"):
        ref_model.integrated_gradients(Xt[:1], steps=0)
    with pytest.raises(ParameterError, match="not among the classes"):
        ref_model.explain(Xt[:1], method="ig", target="scratch")
    with pytest.raises(ParameterError, match="unknown method"):
        ref_model.explain(Xt[:1], method="rollout")


def test_plain_model_also_explains_with_ig(data):
    """Without reference input the baseline is still the mean good image."""
    X, y, Xt, yt, mt = data
    clf = tiny().fine_tune(X, y, epochs=6, base_lr=1e-2)
    assert clf.reference_.shape == (32, 32)
    d = yt != "good"
    assert pointing_score(clf.explain(Xt[d], method="ig", target=yt[d]), mt[d]) >= 0.8


# --------------------------------------------------------------------------- focus windows
@pytest.fixture(scope="module")
def focus_model(data):
    X, y, *_ = data
    return tiny(reference=True, focus=16, focus_sigma=2.0).fine_tune(X, y, epochs=6, base_lr=1e-2)


def test_focus_window_sits_on_the_defect(focus_model, data):
    _, _, Xt, yt, mt = data
    d = yt != "good"
    boxes = focus_model.input_pipeline().focus_boxes(Xt[d])
    assert boxes.shape == (int(d.sum()), 4)
    np.testing.assert_array_equal(
        boxes, inputs.focus_boxes(Xt[d], focus_model.reference_, 16, sigma=2.0)
    )
    assert np.all(boxes[:, 2:] == 16)
    assert np.all((boxes[:, :2] >= 0) & (boxes[:, :2] <= 32 - 16))
    # the whole 7×7 defect lies inside the 16×16 window
    for (r0, c0, h, w), m in zip(boxes, mt[d]):
        rr, cc = np.nonzero(m)
        assert r0 <= rr.min() and rr.max() < r0 + h and c0 <= cc.min() and cc.max() < c0 + w


def test_focus_model_learns_explains_and_round_trips(focus_model, data, tmp_path):
    _, _, Xt, yt, mt = data
    assert focus_model.score(Xt, yt) >= 0.9
    d = yt != "good"
    boxes = focus_model.input_pipeline().focus_boxes(Xt[d])
    for method in ("ig", "gradcam"):
        maps = focus_model.explain(Xt[d], method=method, target=yt[d])
        assert maps.shape == (int(d.sum()), 32, 32)
        for m, (r0, c0, h, w) in zip(maps, boxes):
            outside = m.copy()
            outside[r0 : r0 + h, c0 : c0 + w] = 0
            if method == "gradcam":  # pasted into the frame: nothing outside the window
                assert not outside.any()
            else:  # IG: pixels outside the window get no gradient; smoothing bleeds ≤ a few px
                assert outside.max() < 0.05
    assert pointing_score(focus_model.explain(Xt[d], method="ig", target=yt[d]), mt[d]) >= 0.9
    path = tmp_path / "focus.gaikan"
    focus_model.save(path)
    back = Classifier.load(path)
    assert back.focus == 16
    np.testing.assert_allclose(back.predict_proba(Xt), focus_model.predict_proba(Xt), atol=1e-6)


def test_focus_needs_reference(data):
    X, y, *_ = data
    with pytest.raises(ParameterError, match="focus needs reference"):
        tiny(focus=16).fine_tune(X, y, epochs=1)


# --------------------------------------------------------------------------- review regressions
def test_photometric_jitter_only_moves_the_camera_image(ref_model, data):
    X = data[0]
    x = ref_model.input_pipeline().encode(X[:6])
    jitter = inputs.Augmentation(brightness=0.2, contrast=0.2)
    out = inputs.augment(
        x,
        torch.Generator().manual_seed(0),
        jitter,
        ref_model.input_mean_,
        ref_model.input_std_,
        reference=True,
    )
    m = torch.tensor(ref_model.input_mean_).view(1, 3, 1, 1)
    sd = torch.tensor(ref_model.input_std_).view(1, 3, 1, 1)
    raw_in, raw_out = x * sd + m, out * sd + m
    assert not torch.allclose(raw_out[:, 0], raw_in[:, 0], atol=1e-3)  # the image moved
    torch.testing.assert_close(raw_out[:, 1], raw_in[:, 1])  # the stored reference did not
    torch.testing.assert_close(raw_out[:, 2], 0.5 + raw_out[:, 0] - raw_out[:, 1])


def test_reference_needs_a_good_class(data):
    X, y, *_ = data
    y2 = np.where(y == "good", "fine", y)  # a name the good-class rule does not know
    with pytest.raises(ParameterError, match="needs good images"):
        tiny(reference=True).fine_tune(X, y2, epochs=1)
    clf = tiny(reference=True, good_class=np.str_("fine")).fine_tune(
        X, y2, epochs=1, freeze_epochs=0
    )
    assert clf.reference_.shape == (32, 32)
    assert clf.good_class_ == "fine"
    assert (
        tiny().fine_tune(X, y2, epochs=1, freeze_epochs=0).good_class_ is None
    )  # all defect types
    with pytest.raises(ParameterError, match="not among the classes"):
        tiny(reference=True, good_class="okay").fine_tune(X, y2, epochs=1)


def test_lr_mult_default_follows_pretraining(data, monkeypatch):
    import gaikan.deep.classify.training as mod

    seen = []
    real = mod.discriminative_lrs
    monkeypatch.setattr(
        mod, "discriminative_lrs", lambda lr, mult, k: seen.append(mult) or real(lr, mult, k)
    )
    X, y, *_ = data
    tiny().fine_tune(X[:30], y[:30], epochs=1, freeze_epochs=0)
    tiny().fine_tune(X[:30], y[:30], epochs=1, freeze_epochs=0, lr_mult=10)
    assert seen == [1.0, 10]


def test_channels_last_gives_the_same_predictions(ref_model, data):
    Xt = data[2]
    want = ref_model.predict_proba(Xt[:8])
    plain = Classifier.from_modelfile(ref_model.to_modelfile())
    plain._channels_last = False  # instance override: contiguous weights and inputs
    plain.model_ = plain.model_.to(memory_format=torch.contiguous_format)
    assert plain.model_.conv_stem.weight.is_contiguous()
    np.testing.assert_allclose(plain.predict_proba(Xt[:8]), want, atol=1e-5)


def test_model_file_from_before_reference_loads(data):
    """Files written before reference/focus existed lack those params and arrays."""
    X, y, Xt, *_ = data
    old = tiny().fine_tune(X[:30], y[:30], epochs=1, freeze_epochs=0)
    mf = old.to_modelfile()
    for k in ("reference", "focus", "focus_sigma", "good_class"):
        mf.params.pop(k)
    mf.params["cam_method"] = "layercam"
    mf.arrays.clear()
    back = Classifier.from_modelfile(mf)
    assert back.reference is False and back.reference_ is None
    np.testing.assert_array_equal(back.predict_proba(Xt), old.predict_proba(Xt))
    assert back.explain(Xt[:2]).shape == (2, 32, 32)  # LayerCAM
    with pytest.raises(ParameterError, match="no reference image"):
        back.integrated_gradients(Xt[:1])
