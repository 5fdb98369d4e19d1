"""Keep-aspect resize with reflect padding (``gaikan fit --resize pad``)."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import gaikan
from conftest import structured_images
from gaikan.cli import cli
from gaikan.geometry import (
    content,
    map_to_original,
    mask_pad,
    placement,
    point_to_model,
    point_to_original,
    resize_mode,
    to_model,
)
from gaikan.inspection import Inspector, to_original
from gaikan.io import decode_upload, load_image
from gaikan.modelfile import read_model

sides = st.integers(min_value=1, max_value=3000)
model_sides = st.integers(min_value=8, max_value=512)


@settings(max_examples=300, deadline=None)
@given(h0=sides, w0=sides, h=model_sides, w=model_sides)
def test_placement_keeps_aspect_and_fits(h0, w0, h, w):
    p = placement((h0, w0), (h, w), "pad")
    ih, iw = p.inner
    assert 1 <= ih <= h and 1 <= iw <= w
    assert ih == h or iw == w  # the limiting side fills the model's side
    assert 0 <= p.top and p.top + ih <= h and 0 <= p.left and p.left + iw <= w
    # centred: the two pads differ by at most one pixel
    assert abs((h - ih - p.top) - p.top) <= 1 and abs((w - iw - p.left) - p.left) <= 1
    # aspect kept up to rounding of one pixel on either side
    scale = min(h / h0, w / w0)
    assert abs(ih - h0 * scale) <= 0.5 + 1e-9 or ih == 1
    assert abs(iw - w0 * scale) <= 0.5 + 1e-9 or iw == 1


@settings(max_examples=300, deadline=None)
@given(h0=sides, w0=sides, h=model_sides, w=model_sides, data=st.data())
def test_coordinates_round_trip(h0, w0, h, w, data):
    p = placement((h0, w0), (h, w), "pad")
    # model content pixel -> original -> model: back to the same pixel when the
    # original is at least as fine as the content (downscaling), else within one
    r = data.draw(st.integers(p.top, p.top + p.inner[0] - 1))
    c = data.draw(st.integers(p.left, p.left + p.inner[1] - 1))
    r0, c0 = point_to_original(r, c, p)
    assert 0 <= r0 < h0 and 0 <= c0 < w0
    r1, c1 = point_to_model(r0, c0, p)
    assert abs(r1 - r) <= (0 if h0 >= p.inner[0] else p.inner[0] / h0)
    assert abs(c1 - c) <= (0 if w0 >= p.inner[1] else p.inner[1] / w0)
    # original -> model -> original: within one model pixel's footprint
    rr = data.draw(st.integers(0, h0 - 1))
    cc = data.draw(st.integers(0, w0 - 1))
    m = point_to_model(rr, cc, p)
    assert p.top <= m[0] < p.top + p.inner[0] and p.left <= m[1] < p.left + p.inner[1]
    back = point_to_original(*m, p)
    assert abs(back[0] - rr) <= max(1.0, h0 / p.inner[0])
    assert abs(back[1] - cc) <= max(1.0, w0 / p.inner[1])


@settings(max_examples=200, deadline=None)
@given(
    h0=st.integers(4, 400),
    w0=st.integers(4, 400),
    h=st.integers(8, 64),
    w=st.integers(8, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_pad_region_never_holds_the_peak(h0, w0, h, w, seed):
    p = placement((h0, w0), (h, w), "pad")
    rng = np.random.default_rng(seed)
    amap = rng.random((h, w))
    amap[:, :] += 10.0  # the pad hotter than anything in the content …
    amap[p.top : p.top + p.inner[0], p.left : p.left + p.inner[1]] -= 10.0
    out = mask_pad(amap, p)
    r, c = np.unravel_index(int(np.argmax(out)), out.shape)
    assert p.top <= r < p.top + p.inner[0] and p.left <= c < p.left + p.inner[1]
    # … and the content itself is untouched
    np.testing.assert_array_equal(content(out, p), content(amap, p))


def test_stretch_is_what_gaikan_always_did():
    p = placement((300, 500), (100, 100), "stretch")
    assert p.inner == (100, 100) and not p.padded
    for r, c in ((0, 0), (37, 81), (99, 99)):
        assert point_to_original(r, c, p) == to_original(r, c, (100, 100), (300, 500))


def test_to_model_reflects_and_keeps_the_content():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (40, 120))
    out, p = to_model(img, (60, 60), "pad")
    assert out.shape == (60, 60) and p.inner == (20, 60) and (p.top, p.left) == (20, 0)
    inner = content(out, p)
    ref, _ = to_model(img, (20, 60), "stretch")
    np.testing.assert_allclose(inner, ref)
    # the rows above and below mirror the content (no repeated edge row)
    np.testing.assert_allclose(out[p.top - 1], inner[1])
    np.testing.assert_allclose(out[p.top + 20], inner[-2])
    # a pad wider than the content is reflected again, not refused
    tall, q = to_model(rng.uniform(0, 255, (10, 300)), (64, 64), "pad")
    assert tall.shape == (64, 64) and q.inner == (2, 64)


def test_map_to_original_crops_then_resizes():
    p = placement((100, 300), (90, 90), "pad")  # content 30 x 90 at row 30
    amap = np.zeros((90, 90))
    amap[:30] = 50.0  # heat in the pad only: must vanish
    amap[30 + 15, 60] = 1.0
    back = map_to_original(amap, p)
    assert back.shape == (100, 300) and back.max() <= 1.0
    r, c = np.unravel_index(int(np.argmax(back)), back.shape)
    assert abs(r - 50) <= 3 and abs(c - 201) <= 3
    # a coarser map over the model image works the same
    coarse = map_to_original(amap[::3, ::3], p)
    assert coarse.shape == (100, 300)


def test_load_image_pads_to_the_model_size(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (50, 150)).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 60, resize="pad")
    st_ = load_image(tmp_path / "wide.png", 60)
    assert out.shape == st_.shape == (60, 60)
    p = placement((50, 150), (60, 60), "pad")
    inner = content(out, p)
    assert inner.shape == (20, 60)
    np.testing.assert_allclose(out[p.top - 1], inner[1])
    with pytest.raises(gaikan.ParameterError, match="resize mode"):
        load_image(tmp_path / "wide.png", 60, resize="crop")


def _elongated(n, seed):
    """Good parts 40 x 120 (three of the conftest patterns side by side)."""
    return np.concatenate([structured_images(n, size=40, seed=seed + k) for k in range(3)], axis=2)


def _write(folder, imgs):
    folder.mkdir(parents=True)
    for i, im in enumerate(imgs):
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).save(folder / f"{i:02d}.png")


def test_fit_pad_end_to_end_peaks_in_original_pixels(tmp_path):
    _write(tmp_path / "good", _elongated(20, 0))
    bad = _elongated(2, 50)
    bad[:, 30:36, 95:101] = 255.0  # a bright 6 px defect near the bottom right
    _write(tmp_path / "bad", bad)
    model = tmp_path / "m.gaikan"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["fit", str(tmp_path / "good"), "-o", str(model), "--detector", "rt"]
        + ["--size", "48", "--kernel", "6", "--stride", "3", "--resize", "pad"],
    )
    assert res.exit_code == 0, res.output
    assert read_model(model).meta["resize"] == "pad"
    det = gaikan.load(model)
    assert resize_mode(det) == "pad" and Inspector(det).resize == "pad"
    out = tmp_path / "out"
    res = runner.invoke(cli, ["inspect", str(model), str(tmp_path / "bad"), "-o", str(out)])
    assert res.exit_code in (0, 1), res.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2
    for r in rows:
        assert r["verdict"] == "defect"
        # in the 40 x 120 original, on (or next to) the planted defect (a stretch
        # mapping of the padded model pixel would put it near row 25)
        assert 28 <= int(r["peak_row"]) <= 38 and 92 <= int(r["peak_col"]) <= 104, r
    # the station's and the watcher's path (bytes decoded like an upload) agrees
    core = Inspector(det)
    for r in rows:
        data = open(r["file"], "rb").read()
        img, original = decode_upload(data, "u.png", core.image_shape, resize=core.resize)
        (res,) = core.judge(img[None], shapes=[original])
        assert (res.peak_row, res.peak_col) == (int(r["peak_row"]), int(r["peak_col"]))
        assert res.score == pytest.approx(float(r["score"]), rel=1e-6)


def test_old_and_stretched_models_stay_stretch(tmp_path):
    det = gaikan.create("rt", kernel=8, stride=4).fit(structured_images(12, size=40))
    assert resize_mode(det) == "stretch"
    det.save(tmp_path / "old.gaikan")
    assert "resize" not in read_model(tmp_path / "old.gaikan").meta
    loaded = gaikan.load(tmp_path / "old.gaikan")
    assert not hasattr(loaded, "resize_") and Inspector(loaded).resize == "stretch"


def test_pad_with_tile_is_refused(tmp_path):
    _write(tmp_path / "good", structured_images(12, size=40))
    res = CliRunner().invoke(
        cli,
        ["fit", str(tmp_path / "good"), "-o", str(tmp_path / "m.gaikan")]
        + ["--tile", "16", "--resize", "pad"],
    )
    assert res.exit_code == 2 and "--resize pad" in res.output
