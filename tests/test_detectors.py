"""Behaviour of the numpy detectors (accuracy, thresholds, errors), golden
values against the loop-by-loop reference of SOART.md, and the pixel
evidence of the maps.  The contract itself is tests/test_contract.py."""

import numpy as np
import pytest

import gaikan
import reference as ref
from conftest import plant_defect, structured_images
from gaikan.errors import NotFittedError, ParameterError
from gaikan.metrics import pixel_roc_auc, roc_auc

DETECTORS = [
    lambda: gaikan.SOARTC(kernel=8, stride=4),
    lambda: gaikan.SOART3Map(kernel=8, stride=4),
    lambda: gaikan.RTDetector(kernel=8, stride=4),
    lambda: gaikan.VariantDetector(detector_params={"kernel": 8, "stride": 4}),
]
IDS = ["soartc", "soart3map", "rt", "variants"]


@pytest.fixture(params=range(len(DETECTORS)), ids=IDS)
def make(request):
    return DETECTORS[request.param]


@pytest.fixture(scope="module")
def data():
    good = structured_images(30, seed=0)
    test_good = structured_images(20, seed=5)
    bad, masks = plant_defect(structured_images(20, seed=6))
    return good, test_good, bad, masks


def test_planted_defects_are_found_and_located(make, data):
    good, test_good, bad, masks = data
    det = make().fit(good)
    X = np.concatenate([test_good, bad])
    y = np.r_[np.zeros(20), np.ones(20)]
    assert roc_auc(y, det.anomaly_score(X)) >= 0.97
    amap = det.anomaly_map(bad)
    # within each image the defect is where the map is highest ...
    per_image = [pixel_roc_auc(m[None], a[None]) for m, a in zip(masks, amap)]
    assert np.mean(per_image) >= 0.9
    # the map's maximum lies on the defect, up to one stride (map resolution)
    from scipy.ndimage import binary_dilation

    near = [binary_dilation(m, iterations=4) for m in masks]
    peak = [m.ravel()[a.argmax()] for m, a in zip(near, amap)]
    assert np.mean(peak) >= 0.9
    # ... and, except for SOARTC, pooled over images too.  SOARTC's map is
    # raised everywhere on a defective image (every row of S holds the
    # defect's column), so its pooled pixel AUROC is lower by design.
    pooled = pixel_roc_auc(masks, amap)
    soartc_maps = det.kind == "soartc" or getattr(det, "detector", None) == "soartc"
    assert pooled >= (0.8 if soartc_maps else 0.9)
    # most defective images are flagged, few good ones
    assert (det.predict(bad) == -1).mean() >= 0.8
    assert (det.predict(test_good) == -1).mean() <= 0.2


def test_save_load_round_trip(make, data, tmp_path):
    good, test_good, bad, _ = data
    det = make().fit(good)
    path = tmp_path / "m.gaikan"
    det.save(path)
    back = gaikan.load(path)
    assert type(back) is type(det)
    assert back.get_params() == det.get_params()
    assert back.threshold_ == det.threshold_
    X = np.concatenate([test_good[:3], bad[:3]])
    np.testing.assert_array_equal(back.patch_scores(X), det.patch_scores(X))
    assert type(det).load(path).threshold_ == det.threshold_


def test_input_errors(make):
    det = make()
    with pytest.raises(NotFittedError):
        det.anomaly_score(np.zeros((1, 40, 40)))
    with pytest.raises(ParameterError, match="at least 5"):
        det.fit(structured_images(4))
    with pytest.raises(ParameterError, match="empty"):
        det.fit(np.zeros((0, 40, 40)))
    with pytest.raises(ParameterError, match="empty"):
        det.fit([])
    bad = structured_images(6)
    bad[2, 3, 3] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        det.fit(bad)
    with pytest.raises(ParameterError, match="different shapes"):
        det.fit([np.zeros((40, 40))] * 5 + [np.zeros((40, 41))])
    with pytest.raises(ParameterError, match=r"\(n, H, W\)"):
        det.fit(np.zeros((40, 40)))
    with pytest.raises(ParameterError, match="numeric"):
        det.fit(np.full((6, 40, 40), "a"))
    det.fit(structured_images(6))
    with pytest.raises(ParameterError, match="fitted on 40x40"):
        det.anomaly_score(np.zeros((2, 50, 50)))


def test_threshold_rule_and_override(make, data):
    good = data[0]
    det = make().fit(good)
    # default: 0.99 quantile of leave-one-out training scores
    assert det.threshold_ == pytest.approx(np.quantile(det.train_scores_, 0.99))
    # leave-one-out scores are not the (optimistic) in-sample ones
    assert np.median(det.train_scores_) > np.median(det.anomaly_score(good))
    det2 = make().set_params(threshold_quantile=0.5).fit(good)
    assert det2.threshold_ < det.threshold_
    det3 = make().set_params(threshold=123.0).fit(good)
    assert det3.threshold_ == 123.0 and det3.offset_ == -123.0
    det3.set_threshold(5.0)
    assert det3.threshold_ == 5.0
    with pytest.raises(ParameterError, match="no parameter 'nope'"):
        make().set_params(nope=1)


def test_deterministic(make, data):
    good, test_good, _, _ = data
    a = make().fit(good).patch_scores(test_good)
    b = make().fit(good).patch_scores(test_good)
    np.testing.assert_array_equal(a, b)


# -- golden values against the loop-by-loop reference (1e-9 relative) -----


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    base = rng.uniform(40, 200, (16, 16))
    train = np.clip(np.rint(base + rng.normal(0, 6, (7, 16, 16))), 0, 255)
    test = np.clip(np.rint(base + rng.normal(0, 6, (3, 16, 16))), 0, 255)
    test[1, 4:8, 4:8] += 40
    return train, test


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("precision", ["auto", "float64"])
def test_soartc_golden(small, backend, precision):
    train, test = small
    got = gaikan.SOARTC(
        kernel=4, stride=3, backend=backend, precision=precision, map_refine="none"
    ).fit(train)
    want = ref.soartc(list(train), list(test), 4, 3)
    np.testing.assert_allclose(got.patch_scores(test), want, rtol=1e-9)
    np.testing.assert_allclose(
        got.anomaly_map(test)[1], ref.fold(want[1], (16, 16), 4, 3), rtol=1e-9
    )


def test_soartc_non_integer_input_uses_float64(small):
    train, test = small
    train = train + 0.25
    got = gaikan.SOARTC(kernel=4, stride=3).fit(train).patch_scores(test)
    np.testing.assert_allclose(got, ref.soartc(list(train), list(test), 4, 3), rtol=1e-9)


def test_soart3map_golden(small):
    train, test = small
    got = gaikan.SOART3Map(kernel=4, stride=3).fit(train).patch_scores(test)
    np.testing.assert_allclose(got, ref.soart3map(list(train), list(test), 4, 3), rtol=1e-9)


def test_rt_golden(small):
    train, test = small
    got = gaikan.RTDetector(kernel=4, stride=3).fit(train).patch_scores(test)
    np.testing.assert_allclose(got, ref.rt(list(train), list(test), 4, 3), rtol=1e-9)


def test_soartc_float32_mode_within_spec_tolerance():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    good = structured_images(25, size=40, seed=3) + rng.uniform(0, 1, (25, 40, 40))
    test = structured_images(15, size=40, seed=4) + rng.uniform(0, 1, (15, 40, 40))
    test[5:], _ = plant_defect(test[5:])
    d64 = gaikan.SOARTC(kernel=8, stride=4, precision="float64").fit(good)
    d32 = gaikan.SOARTC(kernel=8, stride=4, precision="float32").fit(good)
    a, b = d64.patch_scores(test), d32.patch_scores(test)
    assert np.all(np.abs(a - b) <= 0.02 * (1 + np.abs(a)))
    assert spearmanr(d64.anomaly_score(test), d32.anomaly_score(test))[0] >= 0.999


def test_soart_image_and_features_shapes(data):
    good, test_good, _, _ = data
    m = gaikan.SOART3Map(kernel=8, stride=4).fit(good)
    assert m.soart_image(test_good[:2]).shape == (2, 9, 9, 3)
    c = gaikan.SOARTC(kernel=8, stride=4).fit(good)
    f = c.features(test_good[:2])
    assert f.shape == (2, 9, 9, 3)
    assert np.all(f[..., 2] <= 0)


def test_registry_create_and_unknown():
    assert isinstance(gaikan.create("soartc", kernel=6), gaikan.SOARTC)
    with pytest.raises(ParameterError, match="unknown detector"):
        gaikan.create("nope")


def test_soartc_median_baseline_variant(data):
    good, _test_good, bad, masks = data
    plain = gaikan.SOARTC(kernel=8, stride=4, map_refine="none").fit(good)
    var = gaikan.SOARTC(kernel=8, stride=4, map_baseline="median", map_refine="none").fit(good)
    np.testing.assert_array_equal(var.anomaly_score(bad), plain.anomaly_score(bad))
    g = plain.patch_scores(bad[:1])
    want = np.maximum(g - np.median(g), 0)
    np.testing.assert_allclose(var.anomaly_map(bad[:1]), gaikan.fold(want, (40, 40), 8, 4))
    assert pixel_roc_auc(masks, var.anomaly_map(bad)) > pixel_roc_auc(masks, plain.anomaly_map(bad))
    with pytest.raises(ParameterError, match="map_baseline"):
        gaikan.SOARTC(kernel=8, stride=4, map_baseline="mean").fit(good)


def test_soartc_refuses_oversized_grid_with_a_fix():
    det = gaikan.SOARTC(kernel=2, stride=1)
    with pytest.raises(ParameterError, match="smaller image size"):
        det.fit(np.zeros((5, 120, 120)))


def _two_variants(n, seed):
    a = structured_images(n, seed=seed)
    b = structured_images(n, seed=seed + 100)[:, :, ::-1].transpose(0, 2, 1)  # another layout
    return a, b


def test_variant_detector_finds_variants_and_scores_each_against_its_own():
    a, b = _two_variants(15, 0)
    good = np.concatenate([a, b])
    det = gaikan.VariantDetector(
        detector="soart3map", detector_params={"kernel": 8, "stride": 4}
    ).fit(good)
    lab = det.train_labels_
    assert (
        det.n_fitted_ == 2
        and len(set(lab[:15])) == 1
        and len(set(lab[15:])) == 1
        and lab[0] != lab[15]
    )
    ta, tb = _two_variants(10, 50)
    assert set(det.variant(ta)) == {lab[0]} and set(det.variant(tb)) == {lab[15]}
    bad_a, _ = plant_defect(ta, delta=40.0)
    y = np.r_[np.zeros(20), np.ones(10)]
    s_var = det.anomaly_score(np.concatenate([ta, tb, bad_a]))
    single = gaikan.SOART3Map(kernel=8, stride=4).fit(good)
    s_one = single.anomaly_score(np.concatenate([ta, tb, bad_a]))
    assert roc_auc(y, s_var) >= 0.99 and roc_auc(y, s_var) >= roc_auc(y, s_one)


def test_variant_detector_merges_groups_too_small():
    good = structured_images(12, seed=0)
    det = gaikan.VariantDetector(n_variants=5, detector_params={"kernel": 8, "stride": 4}).fit(good)
    assert det.n_fitted_ <= 2 and np.bincount(det.train_labels_).min() >= 5


@pytest.mark.parametrize("kind", ["soartc", "soart3map", "rt"])
def test_pixel_evidence_map(kind, data):
    """map_refine="pixel" = √(plain map) × the pixel evidence; scores unchanged;
    the hottest pixel moves onto the planted defect."""
    good, _test_good, bad, masks = data
    plain = gaikan.create(kind, kernel=8, stride=4, map_refine="none").fit(good)
    det = gaikan.create(kind, kernel=8, stride=4).fit(good)
    assert det.map_refine == "pixel"
    np.testing.assert_array_equal(det.anomaly_score(bad), plain.anomaly_score(bad))
    from scipy.ndimage import gaussian_filter

    z = np.abs(bad - good.mean(0)) / (good.std(0, ddof=1) + 8.0)
    z = gaussian_filter(z, (0, 0.8, 0.8), mode="nearest")  # σ = 2 % of 40 px
    np.testing.assert_allclose(det.pixel_evidence(bad), z)
    np.testing.assert_allclose(det.anomaly_map(bad), np.sqrt(plain.anomaly_map(bad)) * z)
    hits = [m.ravel()[a.argmax()] for m, a in zip(masks, det.anomaly_map(bad))]
    plain_hits = [m.ravel()[a.argmax()] for m, a in zip(masks, plain.anomaly_map(bad))]
    assert np.mean(hits) >= 0.95 and np.mean(hits) >= np.mean(plain_hits)


def test_old_model_files_without_pixel_statistics_keep_their_maps(data, tmp_path):
    from gaikan.modelfile import read_model, write_model

    good, _, bad, _ = data
    det = gaikan.RTDetector(kernel=8, stride=4, map_refine="none").fit(good)
    mf = det.to_modelfile()
    del mf.arrays["pixel_mean"], mf.arrays["pixel_std"]
    del mf.params["map_refine"]  # as written before the parameter existed
    write_model(tmp_path / "old.gaikan", mf)
    back = gaikan.load(tmp_path / "old.gaikan")
    assert back.map_refine == "none" and read_model(tmp_path / "old.gaikan").kind == "rt"
    np.testing.assert_array_equal(back.anomaly_map(bad), det.anomaly_map(bad))
