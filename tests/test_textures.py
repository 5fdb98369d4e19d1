"""Synthetic textured surfaces and planted anomalies: exact masks, determinism, layout."""

import numpy as np
import pytest
from PIL import Image

from gaikan.io import find_images
from gaikan.synth.anomalies import ANOMALY_KINDS, plant
from gaikan.synth.textures import (
    BASKET,
    ELONGATED,
    TEXTURE_DEFECTS,
    TEXTURES,
    THIN_DEFECTS,
    TextureSpec,
    make_texture_dataset,
    render_texture,
)


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_planted_mask_is_where_the_pixels_changed(kind):
    base = render_texture(TextureSpec("grain", size=96))[0].astype(float)
    for seed in range(3):
        out, mask = plant(base, kind, np.random.default_rng(seed), size=0.1)
        diff = np.abs(out - base)
        assert mask.any() and (diff[mask] > 0.5).all(), kind
        if kind == "stain":  # a soft rim outside the mask, under half the peak
            assert diff[~mask].max() < 0.5 * diff.max() + 1
        else:
            assert not (diff[~mask] > 0.5).any(), kind
        assert out.min() >= 0 and out.max() <= 255
        assert mask.mean() < 0.2  # small, as a defect is


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="choose from"):
        plant(np.zeros((8, 8)), "meteor", np.random.default_rng(0))


@pytest.mark.parametrize("texture", TEXTURES)
def test_textures_are_deterministic_and_goods_differ(texture):
    spec = TextureSpec(texture, size=64)
    a = render_texture(spec, seed=1, split="train", index=0)[0]
    assert np.array_equal(a, render_texture(spec, seed=1, split="train", index=0)[0])
    b = render_texture(spec, seed=1, split="train", index=1)[0]
    assert not np.array_equal(a, b) and a.dtype == np.uint8 and a.std() > 5


def test_dataset_layout(tmp_path):
    spec = TextureSpec("weave", size=48)
    root = make_texture_dataset(tmp_path / "w", spec, n_good=3, n_test_good=2, n_defect=2)
    assert len(find_images([root / "train" / "good"])) == 3
    for d in TEXTURE_DEFECTS:
        img = np.asarray(Image.open(root / "test" / d / "001.png"))
        mask = np.asarray(Image.open(root / "ground_truth" / d / "001_mask.png")) > 0
        exp_img, exp_mask = render_texture(spec, d, index=1001)
        assert np.array_equal(img, exp_img) and np.array_equal(mask, exp_mask) and mask.any()
    assert len({s.name for s in BASKET}) == len(BASKET) == 2 * len(TEXTURES)


@pytest.mark.parametrize("texture", TEXTURES)
def test_elongated_parts_keep_their_shape_and_their_hairlines_are_thin(texture):
    spec = TextureSpec(texture, defect_size=0.1, size=40, aspect=2.5)
    assert spec.shape == (40, 100) and spec.name.endswith("-a2.5")
    good = render_texture(spec, index=3)[0]
    assert good.shape == (40, 100) and good.std() > 5
    assert np.array_equal(good, render_texture(spec, index=3)[0])
    for d in THIN_DEFECTS:
        img, mask = render_texture(spec, d, index=1003)
        assert img.shape == mask.shape == (40, 100) and mask.any()
        assert mask.mean() < 0.05  # a line, not a blob


def test_the_elongated_family_is_long_and_has_hairline_defects():
    for spec in ELONGATED:
        h, w = spec.shape
        assert w / h == pytest.approx(2.5) and spec.name not in {s.name for s in BASKET}
    img, mask = render_texture(ELONGATED[0], "crack", index=1000)
    assert img.shape == ELONGATED[0].shape
    assert 10 < mask.sum() < 0.001 * mask.size  # 1–2 px wide, tens of px long
