"""Blender renderer (optional): same camera model as the numpy ray caster.

Runs only where a Blender Python is available: set ``GAIKAN_BLENDER_PYTHON``
to a Python that can ``import bpy`` (or to the ``blender`` executable).
"""

from __future__ import annotations

import numpy as np
import pytest

from gaikan.errors import GaikanError
from gaikan.synth import Jitter, build_sample_scenes, defect_mask, render_ids
from gaikan.synth.blender import decode_ids, find_blender_python, render_scenes


@pytest.mark.parametrize("srgb", [False, True])
def test_decode_ids_from_workbench_colours(srgb):
    ids = np.arange(30).reshape(5, 6)
    lin = 8.0 * ids / 255.0
    enc = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055) if srgb else lin
    png = np.rint(255 * enc).astype(np.uint8)
    np.testing.assert_array_equal(decode_ids(png, 29, srgb=srgb), ids)


def test_missing_blender_python_is_a_clear_error(tmp_path):
    fake = tmp_path / "python-without-bpy"
    assert find_blender_python(fake) is None
    with pytest.raises(GaikanError, match="--blender-python"):
        render_scenes([], fake)


@pytest.mark.blender
@pytest.mark.slow
def test_blender_mask_equals_numpy_mask():
    py = find_blender_python()
    if py is None:
        pytest.skip("no Blender Python (set GAIKAN_BLENDER_PYTHON to a Python with bpy)")
    size = 64
    scene, nominal = build_sample_scenes(
        "tilt_y", views=("oblique",), seed=0, index=0, jitter=Jitter().scaled(0.0), pin=(4, 2)
    )
    (img, ids), (_, nids) = render_scenes(
        [
            {"scene": scene, "view": "oblique", "size": size},
            {"scene": nominal, "view": "oblique", "size": size, "ids_only": True},
        ],
        py,
        samples=8,
    )
    ref_ids = render_ids(scene, "oblique", size)
    ref_nids = render_ids(nominal, "oblique", size)
    mask = defect_mask(scene, ids, nominal, nids)
    ref = defect_mask(scene, ref_ids, nominal, ref_nids)
    assert ref.sum() > 10
    # identical camera model: at most a few pixel centres on a silhouette edge differ
    assert (mask != ref).sum() <= max(2, 0.02 * ref.sum())
    assert (ids != ref_ids).mean() < 0.01
    assert img.shape == (size, size) and img.dtype == np.uint8 and img.std() > 5


def test_blender_dataset_plumbing_with_stand_in_renderer(tmp_path, monkeypatch):
    """make_dataset(renderer="blender") wiring: job order, ids → masks, noise, files.

    The Blender subprocess is replaced by the numpy ray caster (noise-free, as
    Blender's output is), so the files must equal the numpy renderer's.
    """
    from PIL import Image

    from gaikan.synth import blender, make_dataset, render

    calls = []

    def stand_in(jobs, blender_python=None, **kw):
        calls.append(len(jobs))
        out = []
        for j in jobs:
            img, ids = render(j["scene"], j["view"], j["size"])
            out.append((None if j.get("ids_only") else img, ids))
        return out

    monkeypatch.setattr(blender, "render_scenes", stand_in)
    kw = dict(
        n_good=2,
        n_test_good=0,
        n_defect=2,
        defects=("missing",),
        views=("top", "oblique"),
        size=32,
        seed=4,
    )
    a = make_dataset(tmp_path / "b", renderer="blender", blender_python="unused", **kw)
    b = make_dataset(tmp_path / "n", **kw)
    # 2 goods × 2 views + 2 defects × 2 views × (image + nominal ids)
    assert sum(calls) == 4 + 8

    def px(root, rel):
        return np.asarray(Image.open(root / rel)).astype(int)

    # images: the stand-in's output is rounded before the noise is added, so ±1
    for rel in ("top/train/good/001.png", "oblique/test/missing/001.png"):
        d = np.abs(px(a, rel) - px(b, rel))
        assert d.max() <= 1 and d.mean() < 0.6
    np.testing.assert_array_equal(
        px(a, "oblique/ground_truth/missing/001_mask.png"),
        px(b, "oblique/ground_truth/missing/001_mask.png"),
    )
    assert (a / "labels.jsonl").read_text() == (b / "labels.jsonl").read_text()
