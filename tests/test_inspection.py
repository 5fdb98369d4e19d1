"""The inspection layer: one result type, calibrated maps, one colour policy."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gaikan
from conftest import plant_defect, structured_images
from gaikan.inspection import Inspection, Inspector, calibrate, to_original
from gaikan.inspection.display import colour_index, colourise, overlay_png

maps = arrays(np.float64, (6, 7), elements=st.floats(0, 1e4, allow_nan=False))
scores = st.floats(0, 1e5, allow_nan=False, allow_infinity=False)
thresholds = st.floats(1e-6, 1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(maps, scores)
# found by hypothesis in CI: a subnormal spread (max − median = 2.2e-308) gave nan everywhere
@example(np.pad(np.array([[2.2250738585072014e-308]]), ((0, 5), (0, 6))), 4.0)
def test_display_map_max_is_the_score_and_keeps_the_peak(amap, score):
    d = calibrate(amap, score)
    assert d.shape == amap.shape and d.max() == score and d.min() >= 0
    if amap.max() > 0:
        assert d.flat[np.argmax(amap)] == score


@settings(max_examples=300, deadline=None)
@given(maps, scores, thresholds)
def test_ng_iff_the_overlay_reaches_the_threshold_colour(amap, score, t):
    d = calibrate(amap, score)
    warm = (colour_index(d, t) >= 128).any()
    assert warm == (score > t)


def test_colour_scale_is_monotone_with_a_jump_at_the_threshold():
    t = 4.0
    d = np.array([[0.0, 1.0, 3.99, 4.0, 4.01, 12.0, 40.0, 1e9]])
    idx = colour_index(d, t)[0]
    assert list(idx) == sorted(idx) and idx[0] == 0 and idx[-1] == 255
    assert idx[3] == 127 and idx[4] == 128  # at the threshold: still cool; above: warm
    rgb = colourise(d, t)[0]
    assert tuple(rgb[4]) == (255, 225, 0)  # the threshold colour is yellow
    assert rgb[0, 2] > rgb[0, 0] and rgb[-1, 0] > rgb[-1, 2]  # blue … red
    assert overlay_png(np.full((1, 8), 100.0), d, t).startswith(b"\x89PNG")


def test_to_original_matches_pixel_centres():
    assert to_original(0, 0, (100, 100), (500, 1250)) == (2, 6)
    assert to_original(99, 99, (100, 100), (500, 1250)) == (497, 1243)
    assert to_original(5, 7, (10, 10), (10, 10)) == (5, 7)


@pytest.fixture(scope="module")
def fitted():
    det = gaikan.SOARTC(kernel=8, stride=4).fit(structured_images(12, seed=0))
    bad, masks = plant_defect(structured_images(4, seed=6))
    return det, bad, masks


def test_detector_inspections_agree_with_the_detector(fitted):
    det, bad, _ = fitted
    res = Inspector(det).judge(bad, [f"b{i}" for i in range(4)], shapes=[(80, 120)] * 4)
    scores = det.anomaly_score(bad)
    for r, s in zip(res, scores):
        assert isinstance(r, Inspection) and r.score == pytest.approx(s)
        assert r.verdict == ("defect" if s > det.threshold_ else "ok")
        assert r.map_max == r.score and r.display.shape == (40, 40)
        assert 0 <= r.peak_row < 80 and 0 <= r.peak_col < 120  # original coordinates
        assert r.to_json()["map"]["max"] == r.score


def test_threshold_override_and_bad_threshold(fitted):
    det, bad, _ = fitted
    assert all(r.verdict == "ok" for r in Inspector(det, threshold=1e12).judge(bad))
    with pytest.raises(gaikan.ParameterError):
        Inspector(det, threshold=float("nan"))


def test_non_finite_scores_become_errors(fitted, monkeypatch):
    det, bad, _ = fitted
    real = det.detect

    def detect(X):
        out = real(X)
        out.scores[1] = np.nan
        return out

    monkeypatch.setattr(det, "detect", detect)
    res = Inspector(det).judge(bad)
    assert res[1].verdict == "error" and "no finite score" in res[1].error
    assert res[0].verdict != "error"


class _FakeClassifier:
    """Enough of a fitted classifier for the verdict rule (kind 'classifier')."""

    kind = "classifier"
    image_size = 8

    def __init__(self, proba, classes, good):
        self._p = np.asarray(proba, float)
        self.classes_ = np.asarray(classes)
        self.good_class_ = good

    def predict_proba(self, X):
        return self._p[: len(X)]

    def explain(self, X, target=None):
        m = np.zeros((len(X), 8, 8))
        m[:, 2, 3] = 1.0
        return m


def test_classifier_score_is_one_minus_p_good():
    p = [[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1]]
    clf = _FakeClassifier(p, ["good", "scratch", "dent"], "good")
    res = Inspector(clf).judge(np.zeros((3, 8, 8)))
    assert [r.verdict for r in res] == ["ok", "defect", "defect"]
    # good wins the argmax but with P(good) < 0.5: not sure enough to pass
    assert res[1].cls == "good" and res[1].score == pytest.approx(0.6)
    assert [r.cls for r in res] == ["good", "good", "scratch"]
    assert all(r.map_max == r.score and (r.peak_row, r.peak_col) == (2, 3) for r in res)
    no_good = Inspector(_FakeClassifier(p, ["a", "b", "c"], None)).judge(np.zeros((3, 8, 8)))
    assert all(r.verdict == "defect" and r.score == 1.0 for r in no_good)
