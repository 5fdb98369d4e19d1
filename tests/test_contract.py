"""The estimator contract, run over every kind in the registry.

Detector kinds get the whole contract (fit on tiny planted data, shapes,
directions, thresholds, maps, detect, model files, clone, parameter
validation, set_params); classifier kinds the part that applies without
training (they are imported only through the registry, so this test does
not depend on the classifier package's internal layout).  A kind added to
the registry without an entry in ``SMALL`` below fails
``test_every_registered_kind_is_covered``.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

import gaikan
from conftest import plant_defect, structured_images
from gaikan._params import clone
from gaikan.detectors.registry import (
    DEEP_KINDS,
    KINDS,
    REGISTRY,
    default_size,
    get_detector_class,
    model_family,
)
from gaikan.errors import NotFittedError, ParameterError

HAS_DEEP = all(importlib.util.find_spec(m) for m in ("torch", "timm"))
SIZE = 48

_DEEP_SMALL = {"layers": (2, 3), "feature_stride": 8, "num_threads": 1}
#: Small, fast settings per detector kind (seconds on one core).
SMALL: dict[str, dict] = {
    "soartc": {"kernel": 8, "stride": 4},
    "soart3map": {"kernel": 8, "stride": 4},
    "rt": {"kernel": 8, "stride": 4},
    "variants": {"detector_params": {"kernel": 8, "stride": 4}},
    "tiled": {
        "detector": "rt",
        "detector_params": {"kernel": 8, "stride": 4},
        "tile": 24,
        "overlap": 8,
    },
    "padim": {**_DEEP_SMALL, "n_features": 24},
    "patchcore": {**_DEEP_SMALL, "coreset_ratio": 0.25},
    "soart-deep": {**_DEEP_SMALL, "n_features": 24},
}
#: Per kind: a parameter change that ``fit`` must honour, and how to see it.
CHANGED: dict[str, tuple[dict, object]] = {
    "soartc": ({"kernel": 6, "stride": 6}, lambda d: d.grid_shape_ == (8, 8)),
    "soart3map": ({"kernel": 6, "stride": 6}, lambda d: d.grid_shape_ == (8, 8)),
    "rt": ({"kernel": 6, "stride": 6}, lambda d: d.grid_shape_ == (8, 8)),
    "variants": ({"detector": "rt"}, lambda d: type(d.members_[0]) is gaikan.RTDetector),
    "tiled": ({"tile": 16, "overlap": 0}, lambda d: len(d.starts_) == 9),
}
#: Per kind: parameters that ``fit`` must refuse with a ParameterError.
INVALID: dict[str, list[dict]] = {
    "soartc": [
        {"map_baseline": "bogus"},
        {"kernel": 0},
        {"stride": 0},
        {"kernel": 2.5},
        {"precision": "half"},
        {"backend": "gpu"},
        {"eps": -1.0},
    ],
    "soart3map": [{"kernel": 0}, {"stride": -1}, {"eps": float("nan")}],
    "rt": [{"kernel": 0}, {"stride": "5"}],
    "variants": [{"detector": "nope"}, {"detector": "classifier"}, {"n_variants": 0}],
    "tiled": [
        {"tile": 4},
        {"overlap": -1},
        {"overlap": 24},
        {"detector": "classifier"},
        {"detector": "nope"},
        {"tile_batch": 0},
    ],
    "padim": [
        {"n_features": 0},
        {"runtime": "tpu"},
        {"layers": ()},
        {"grid_sigma": -1.0},
        {"image_size": "big"},
        {"image_size": 0},
    ],
    "patchcore": [{"coreset_ratio": 0.0}, {"bank_dtype": "int8"}, {"n_neighbors": -1}],
    "soart-deep": [{"stages": ("soart9",)}, {"stages": ()}, {"batch_size": 0}],
}
#: Parameters every detector refuses.
INVALID_COMMON = [
    {"threshold_quantile": 0.0},
    {"threshold_quantile": 1.5},
    {"threshold": -1.0},
    {"threshold": math.inf},
    {"threshold": math.nan},
    {"map_refine": "blur"},
]

#: Kinds made by ``gaikan export``, not by fit: their contract is checked in tests/test_export.py.
EXPORTED = {"onnx-detector"}
DETECTOR_KINDS = [k for k in KINDS if KINDS[k].family == "detector" and k not in EXPORTED]
CLASSIFIER_KINDS = [k for k in KINDS if KINDS[k].family == "classifier"]


def _marks(kind):
    if kind not in DEEP_KINDS:
        return []
    return [
        pytest.mark.deep,
        pytest.mark.skipif(not HAS_DEEP, reason="needs gaikan[deep] (torch, timm)"),
    ]


def _params(kinds):
    return [pytest.param(k, marks=_marks(k), id=k) for k in kinds]


def make(kind: str, **extra):
    return gaikan.create(kind, **{**SMALL[kind], **extra})


@pytest.fixture(scope="module")
def data():
    good = structured_images(20, size=SIZE, seed=0)
    test_good = structured_images(4, size=SIZE, seed=5)
    bad, _masks = plant_defect(structured_images(4, size=SIZE, seed=6))
    return good, np.concatenate([test_good, bad])


@pytest.fixture(scope="module")
def fitted(request, data):
    torch = pytest.importorskip("torch") if request.param in DEEP_KINDS else None
    if torch is not None:
        torch.set_num_threads(1)
    return request.param, make(request.param).fit(data[0])


def test_every_registered_kind_is_covered():
    assert set(REGISTRY) == set(KINDS)
    assert set(DETECTOR_KINDS) == set(SMALL) == set(INVALID)
    assert DEEP_KINDS == {k for k, v in KINDS.items() if v.extra == "deep"}
    for kind, spec in KINDS.items():
        assert spec.name == kind and spec.family in ("detector", "classifier")
        assert default_size(kind) == (spec.default_size, spec.default_size)
    assert default_size("soartc") == (100, 100) and default_size("padim") == (256, 256)
    with pytest.raises(ParameterError, match="unknown detector"):
        model_family("nope")


@pytest.mark.parametrize("fitted", _params(DETECTOR_KINDS), indirect=True)
def test_detector_contract(fitted, data, tmp_path):
    kind, det = fitted
    _, X = data
    n = len(X)
    cls = get_detector_class(kind)
    assert type(det) is cls and cls.kind == kind and model_family(det) == "detector"
    assert model_family(kind) == model_family(cls) == "detector"
    for attr in ("threshold_", "offset_", "image_shape_", "n_train_", "train_scores_"):
        assert hasattr(det, attr), attr
    assert det.offset_ == -det.threshold_ and np.isfinite(det.threshold_)
    # the default threshold is the quantile of the leave-one-out training scores
    assert det.threshold_ == pytest.approx(np.quantile(det.train_scores_, det.threshold_quantile))

    s = det.anomaly_score(X)
    assert s.shape == (n,) and np.isfinite(s).all()
    np.testing.assert_array_equal(det.score_samples(X), -s)
    np.testing.assert_allclose(det.decision_function(X), det.score_samples(X) - det.offset_)
    pred = det.predict(X)
    assert set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred == -1, s > det.threshold_)
    grid = det.patch_scores(X)
    assert grid.shape == (n, *det.grid_shape_)
    np.testing.assert_allclose(grid.reshape(n, -1).max(axis=1), s)
    amap = det.anomaly_map(X)
    assert amap.shape == (n, SIZE, SIZE) and np.isfinite(amap).all() and (amap >= 0).all()

    res = det.detect(X)
    np.testing.assert_allclose(res.scores, s)
    np.testing.assert_allclose(res.maps, amap)
    np.testing.assert_array_equal(res.is_defect, pred == -1)

    path = tmp_path / f"{kind}.gaikan"
    det.save(path)
    back = gaikan.load(path)
    # parameters come back as JSON gives them (a tuple of layers as a list)
    assert type(back) is cls
    assert back.get_params() == json.loads(json.dumps(det.get_params()))
    assert back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.anomaly_score(X), s)
    np.testing.assert_allclose(back.anomaly_map(X), amap, rtol=1e-6, atol=1e-9)

    twin = clone(det)
    assert type(twin) is cls and twin is not det and twin.get_params() == det.get_params()
    with pytest.raises(NotFittedError):
        twin.anomaly_score(X)


@pytest.mark.parametrize("kind", _params(DETECTOR_KINDS))
def test_not_fitted_and_bad_input(kind):
    det = make(kind)
    with pytest.raises(NotFittedError, match="not fitted"):
        det.anomaly_map(np.zeros((1, SIZE, SIZE)))
    with pytest.raises(NotFittedError):
        det.detect(np.zeros((1, SIZE, SIZE)))
    with pytest.raises(ParameterError, match="at least 5"):
        det.fit(structured_images(4, size=SIZE))
    with pytest.raises(ParameterError, match=r"\(n, H, W\)"):
        det.fit(np.zeros((SIZE, SIZE)))


@pytest.mark.parametrize("kind", _params(DETECTOR_KINDS))
def test_invalid_params_raise_at_fit(kind, data):
    good = data[0][:5]
    for bad in INVALID[kind] + INVALID_COMMON:
        det = make(kind, **bad)  # __init__ stores parameters untouched
        with pytest.raises(ParameterError, match=next(iter(bad))):
            det.fit(good)


@pytest.mark.parametrize("kind", _params(DETECTOR_KINDS))
def test_set_params_then_fit_honours_new_params(kind, data):
    good = data[0][:8]
    if kind in DEEP_KINDS:
        pytest.importorskip("torch").set_num_threads(1)
    det = make(kind).fit(good)
    if kind in CHANGED:
        change, check = CHANGED[kind]
    else:  # deep: another layer list must give another feature extractor
        change = {"layers": (3,)}
        old = list(det._extractor().channels)

        def check(d):
            return list(d._extractor().channels) == list(clone(d)._extractor().channels) != old

    assert det.set_params(**change) is det
    det.fit(good)
    assert check(det)
    assert det.set_params(threshold=7.5).fit(good).threshold_ == 7.5
    with pytest.raises(ParameterError, match="no parameter"):
        det.set_params(nope=1)


@pytest.mark.parametrize("kind", _params(CLASSIFIER_KINDS))
def test_classifier_kinds(kind):
    pytest.importorskip("torch")
    cls = get_detector_class(kind)
    assert cls.kind == kind
    assert model_family(kind) == model_family(cls) == "classifier"
    assert not issubclass(cls, gaikan.BaseDetector)
    est = cls()
    assert model_family(est) == "classifier"
    twin = clone(est)
    assert type(twin) is cls and twin.get_params().keys() == est.get_params().keys()
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(twin))


def test_validation_helpers():
    from gaikan._validation import as_hw, check_images, check_is_fitted

    assert as_hw(128) == (128, 128) and as_hw(np.int64(64)) == (64, 64)
    assert as_hw((96, 128)) == (96, 128) == as_hw([96, 128]) == as_hw("96x128")
    assert as_hw(" 50 ") == (50, 50)
    for bad in (0, -3, True, 2.5, (1, 2, 3), (0, 5), "big", "9x", None, (1.5, 2)):
        with pytest.raises(ParameterError, match="size"):
            as_hw(bad)
    with pytest.raises(ParameterError, match="must have shape"):
        check_images(np.zeros(5))
    assert check_images([np.zeros((4, 4))] * 2).shape == (2, 4, 4)
    det = gaikan.SOARTC()
    with pytest.raises(NotFittedError, match="SOARTC is not fitted"):
        check_is_fitted(det, "sbar_")
    det.sbar_ = np.zeros((1, 1))
    check_is_fitted(det, ["sbar_"])
    with pytest.raises(ParameterError, match="not a gaikan model"):
        model_family(object())
    with pytest.raises(ParameterError, match="cannot clone"):
        clone(object())
    # the old import path of check_images still works
    from gaikan.detectors.base import check_images as old

    assert old is check_images
