import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaikan.metrics import pixel_roc_auc, roc_auc, roc_curve
from gaikan.report import InspectionRecord, heat_norm, overlay_png, overlay_rgb, write_report


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40))
def test_roc_auc_equals_pair_counting(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], float)
    if y.all() or not y.any():
        with pytest.raises(ValueError):
            roc_auc(y, s)
        return
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(s[y], s[~y]))
    assert roc_auc(y, s) == pytest.approx(wins / (y.sum() * (~y).sum()))


def test_roc_curve_and_pixel_auroc():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr, _thr = roc_curve(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 1] = True
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 1] = 5
    assert pixel_roc_auc(masks, maps) == 1.0


def test_overlay_colours_follow_threshold():
    img = np.full((4, 4), 128.0)
    amap = np.array([[0.5] * 4, [10] * 4, [25] * 4, [1e4] * 4])
    n = heat_norm(amap, threshold=10)
    assert np.all(np.diff(n[:, 0]) > 0) and n[3, 0] == 1.0 and 0.5 < n[1, 0] < 0.8
    rgb = overlay_rgb(img, amap, threshold=10, alpha=1.0)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # good = blue
    assert rgb[3, 0, 0] > rgb[3, 0, 2]  # far over = red
    assert overlay_png(img, amap).startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        overlay_rgb(img, amap[:2])


def test_write_report(tmp_path):
    recs = [
        InspectionRecord(f"good/{i}.png", score=1.0 + i, verdict="ok", label="good")
        for i in range(5)
    ]
    recs += [
        InspectionRecord(f"bad/{i}.png", score=50.0 + i, verdict="defect", label="bad")
        for i in range(5)
    ]
    recs.append(
        InspectionRecord(
            "bad/broken.png", error="bad/broken.png: the file is truncated", label="bad"
        )
    )
    html = write_report(tmp_path, recs, threshold=10.0, model="m").read_text()
    assert "image AUROC (folder labels)</td><td>1.0000" in html
    assert "the file is truncated" in html
    assert html.count("data:image/png;base64") == 2  # histogram + ROC
    assert "11 (10 scored, 1 unreadable)" in html
