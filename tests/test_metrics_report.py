import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaikan.inspection import Inspection
from gaikan.metrics import pixel_roc_auc, roc_auc, roc_curve
from gaikan.report import write_report


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


def test_write_report(tmp_path):
    recs = [
        Inspection(f"good/{i}.png", "ok", score=1.0 + i, threshold=10.0, label="good")
        for i in range(5)
    ]
    recs += [
        Inspection(f"bad/{i}.png", "defect", score=50.0 + i, threshold=10.0, label="bad")
        for i in range(5)
    ]
    recs.append(Inspection("good/alarm.png", "defect", score=11.0, threshold=10.0, label="good"))
    recs.append(Inspection("bad/miss.png", "ok", score=9.0, threshold=10.0, label="bad"))
    recs.append(Inspection.failed("bad/broken.png", "bad/broken.png: the file is truncated", "bad"))
    html = write_report(tmp_path, recs, threshold=10.0, model="m").read_text()
    assert "image AUROC (folder labels)" in html
    assert "the file is truncated" in html
    assert html.count("data:image/png;base64") == 2  # histogram + ROC (no overlays written)
    assert "13 (12 scored, 1 could not be inspected)" in html
    assert "False alarms (1)" in html and "Misses (1)" in html
    assert "<svg" in html and "threshold" in html  # the colour bar
    assert "Confusion counts" in html
    assert "Incomplete run" not in html


def _aupro_direct(masks, maps, limit=0.3):
    """Loop-by-loop AUPRO: every distinct value as a threshold, regions by flood fill."""
    from scipy import ndimage

    regions = []
    for i in range(masks.shape[0]):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, lab == j) for j in range(1, k + 1)]
    normal = ~masks
    pts = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        hit = maps >= t
        fpr = (hit & normal).sum() / normal.sum()
        pro = np.mean([(hit[i] & r).sum() / r.sum() for i, r in regions])
        pts.append((fpr, pro))
    fpr, pro = np.array(pts).T
    end = np.interp(limit, fpr, pro)
    keep = fpr <= limit
    return np.trapezoid(np.r_[pro[keep], end], np.r_[fpr[keep], limit]) / limit


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_aupro_matches_a_direct_implementation(seed):
    from gaikan.metrics import pixel_aupro

    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 9, 9), bool)
    masks[0, 1:4, 1:3] = True
    masks[0, 6:8, 5:9] = True  # two regions of different size in one image
    masks[1, 4, 4] = True
    maps = rng.integers(0, 6, masks.shape).astype(float)  # ties on purpose
    maps[masks] += rng.integers(0, 4, masks.sum())
    assert pixel_aupro(masks, maps) == pytest.approx(_aupro_direct(masks, maps), abs=1e-12)


def test_aupro_extremes():
    from gaikan.metrics import pixel_aupro

    masks = np.zeros((2, 6, 6), bool)
    masks[0, 2:4, 2:4] = True
    perfect = masks.astype(float)
    assert pixel_aupro(masks, perfect) == pytest.approx(1.0)
    assert pixel_aupro(masks, 1.0 - perfect) < 0.05
