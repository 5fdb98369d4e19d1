"""gaikan.synth: scene, ray caster, masks, defects (in memory, no disk)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from gaikan.synth import (
    DEFAULT_SEVERITY,
    DEFECT_MODES,
    Jitter,
    Scene,
    build_sample_scenes,
    build_scene,
    render,
    render_ids,
    render_sample,
)
from gaikan.synth.raycast import camera_rays, cast, pack
from gaikan.synth.scene import (
    N_COLS,
    N_ROWS,
    make_camera,
    parse_defect,
    pin_name,
    pin_pattern,
    sample_defect,
)

STILL = Jitter().scaled(0.0)  # no nominal variation: exact geometry


# ---------------------------------------------------------------- analytic helpers


def _project(cam, pts: np.ndarray, size: int) -> np.ndarray:
    """World points (n, 3) → pixel coordinates (n, 2) as (col, row), continuous (centre of pixel j at j + .5)."""
    R = cam.R
    rel = (pts - np.asarray(cam.position)) @ R  # camera frame: x right, y up, z backward
    tan = math.tan(math.radians(cam.fov_y) / 2)
    x = rel[:, 0] / -rel[:, 2] / tan
    y = rel[:, 1] / -rel[:, 2] / tan
    return np.stack([(x + 1) / 2 * size, (1 - y) / 2 * size], axis=1)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise in (col, row) coordinates), monotone chain."""
    pts = sorted(map(tuple, points))

    def half(seq):
        h = []
        for p in seq:
            while (
                len(h) >= 2
                and (h[-1][0] - h[-2][0]) * (p[1] - h[-2][1])
                - (h[-1][1] - h[-2][1]) * (p[0] - h[-2][0])
                <= 0
            ):
                h.pop()
            h.append(p)
        return h

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _signed_inside(poly: np.ndarray, size: int) -> np.ndarray:
    """Min signed distance (px) of each pixel centre to the edges of a convex polygon (> 0 inside)."""
    jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    d = np.full((size, size), np.inf)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        e = b - a
        n = np.array([-e[1], e[0]]) / np.hypot(*e)
        d = np.minimum(d, (jj - a[0]) * n[0] + (ii - a[1]) * n[1])
    return d


def _visible_points(prim, z_floor: float = 0.0) -> np.ndarray:
    """Sample points of an upright pin's part above the housing (z ≥ z_floor)."""
    c = np.asarray(prim.center)
    hx, hy, hz = prim.half
    lo, hi = max(c[2] - hz, z_floor), c[2] + hz
    if prim.kind == "box":
        xy = np.array([[sx * hx, sy * hy] for sx in (-1, 1) for sy in (-1, 1)])
    else:
        a = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
        xy = np.stack([hx * np.cos(a), hx * np.sin(a)], 1)
    pts = [np.c_[xy + c[:2], np.full(len(xy), z)] for z in (lo, hi)]
    return np.concatenate(pts)


def _analytic_silhouette(scene: Scene, name: str, view: str, size: int) -> np.ndarray | None:
    """Signed-distance field of an upright pin's silhouette (None if the pin is absent)."""
    k = scene.index(name)
    if k is None:
        return None
    prim = scene.primitives[k - 1]
    assert np.allclose(prim.R, np.eye(3)), "analytic helper handles upright pins only"
    pix = _project(scene.cameras[view], _visible_points(prim), size)
    return _signed_inside(_hull(pix), size)


# ---------------------------------------------------------------- scene


def test_scene_json_roundtrip_renders_identically():
    scene, _ = build_sample_scenes("tilt_x", seed=3, index=1, views=("top",))
    text = json.dumps(scene.to_dict())
    back = Scene.from_dict(json.loads(text))
    assert back.to_dict() == scene.to_dict()
    a, ia = render(scene, "top", 48)
    b, ib = render(back, "top", 48)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)


def test_layouts_and_patterns():
    assert pin_pattern("square") == ["s"] * 27
    assert pin_pattern("cylinder") == ["c"] * 27
    mixed = pin_pattern("mixed")
    assert set(mixed) == {"s", "c"}
    assert pin_pattern("mixed", "column")[1] == "c" and pin_pattern("mixed", "column")[0] == "s"
    explicit = "s" * 26 + "c"
    assert pin_pattern("mixed", explicit) == list(explicit)
    with pytest.raises(ValueError, match="27 characters"):
        pin_pattern("mixed", "sc")
    with pytest.raises(ValueError, match="layout"):
        pin_pattern("hexagonal")
    kinds = {p.kind for p in build_scene("cylinder").primitives if p.name.startswith("pin")}
    assert kinds == {"cylinder"}
    assert (
        len([p for p in build_scene("square").primitives if p.name.startswith("pin")])
        == N_ROWS * N_COLS
    )


def test_parse_defect_and_severity_sampling():
    assert parse_defect("pushed+tilt_x") == ("pushed", "tilt_x")
    with pytest.raises(ValueError, match="unknown defect"):
        parse_defect("bent")
    rng = np.random.default_rng(0)
    seen_signs = set()
    pins = set()
    for _ in range(200):
        d = sample_defect(("pushed", "tilt_y", "shifted"), rng)
        lo, hi = DEFAULT_SEVERITY["pushed"]
        assert lo <= d.severity["pushed"] <= hi
        lo, hi = DEFAULT_SEVERITY["tilt_y"]
        assert lo <= abs(d.severity["tilt_y"]) <= hi
        seen_signs.add(np.sign(d.severity["tilt_y"]))
        lo, hi = DEFAULT_SEVERITY["shifted"]
        assert lo <= d.severity["shifted"] <= hi
        pins.add((d.row, d.col))
    assert seen_signs == {-1.0, 1.0}
    assert len(pins) > 20  # the pin is drawn over the whole grid
    fixed = sample_defect(("tilt_x",), rng, severity={"tilt_x": -12.5}, pin=(2, 0))
    assert fixed.severity == {"tilt_x": -12.5} and (fixed.row, fixed.col) == (2, 0)


def test_camera_views_and_pixel_model():
    cam = make_camera("top")
    _o, d = camera_rays(cam, (33, 33))
    # the centre pixel's ray looks straight down the optical axis
    np.testing.assert_allclose(d[16, 16], [0, 0, -1], atol=1e-12)
    # top camera: world +x to the right, +y up in the image
    px = _project(cam, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 33)
    assert px[0, 0] > 16.5 and abs(px[0, 1] - 16.5) < 1e-9
    assert px[1, 1] < 16.5
    with pytest.raises(ValueError, match="unknown view"):
        make_camera("bottom")


# ---------------------------------------------------------------- renderer


def test_ray_box_and_cylinder_hits_exact():
    scene = build_scene("mixed", views=("top",))
    pk = pack(scene)
    # straight down through pin (4, 1) centre: hits its top at z = 2 exactly
    for row, col in ((4, 1), (4, 0)):
        name = pin_name(row, col)
        k = scene.index(name)
        prim = scene.primitives[k - 1]
        x, y = prim.center[0], prim.center[1]
        t, ids, n = cast(pk, np.array([x, y, 10.0]), np.array([[0.0, 0.0, -1.0]]))
        assert ids[0] == k
        assert t[0] == pytest.approx(8.0, abs=1e-12)
        np.testing.assert_allclose(n[0], [0, 0, 1], atol=1e-12)
        # horizontally at mid height from +x: hits the side facing +x
        t, ids, n = cast(pk, np.array([x + 0.5 + 1e-3, y, 1.0]), np.array([[-1.0, 0.0, 0.0]]))
        assert ids[0] == k
        assert t[0] == pytest.approx(0.25 + 1e-3, abs=1e-12)
        np.testing.assert_allclose(n[0], [1, 0, 0], atol=1e-12)
    # between pins, the ray reaches the housing top (z = 0)
    t, ids, _ = cast(pk, np.array([-0.5, 0.5, 10.0]), np.array([[0.0, 0.0, -1.0]]))
    assert scene.primitives[ids[0] - 1].name == "housing" and t[0] == pytest.approx(10.0)


def test_render_determinism_and_noise():
    a1, m1, l1 = render_sample("pushed", view="oblique", size=64, seed=5, index=2)
    a2, m2, l2 = render_sample("pushed", view="oblique", size=64, seed=5, index=2)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(m1, m2)
    assert l1 == l2
    b, _, _ = render_sample("pushed", view="oblique", size=64, seed=5, index=3)
    assert not np.array_equal(a1, b)
    assert a1.dtype == np.uint8 and a1.shape == (64, 64) and m1.dtype == bool


def test_good_images_align_pixelwise():
    """Nominal jitter keeps every pin on the same pixels: good images differ only a little."""
    imgs = np.stack(
        [
            render_sample("good", view=v, size=128, split="train", index=i)[0]
            for v in ("top",)
            for i in range(6)
        ]
    ).astype(float)
    spread = imgs.std(axis=0)
    assert np.median(spread) < 3.0  # sensor noise level
    assert np.mean(spread > 20) < 0.03  # few edge pixels flip


def test_supersampling_keeps_centre_ids():
    scene, _ = build_sample_scenes("good", views=("oblique",))
    img1, ids1 = render(scene, "oblique", 40)
    img2, ids2 = render(scene, "oblique", 40, supersample=3)
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_array_equal(ids1, render_ids(scene, "oblique", 40))
    assert 0 < np.abs(img1.astype(int) - img2.astype(int)).mean() < 15  # anti-aliased edges only


# ---------------------------------------------------------------- masks and defects


@pytest.mark.parametrize("view", ["top", "oblique"])
@pytest.mark.parametrize("mode", DEFECT_MODES)
def test_masks_nonempty_and_defect_changes_image_inside_mask(mode, view):
    # a corner pin: pushing the centre pin in changes nothing from the top but
    # its shadow (true to life: that is why there is an oblique view)
    size = 96
    scene, nominal = build_sample_scenes(
        mode, views=(view,), seed=1, index=0, jitter=STILL, pin=(8, 2)
    )
    img, ids = render(scene, view, size)
    ref, nids = render(nominal, view, size)
    from gaikan.synth import defect_mask

    mask = defect_mask(scene, ids, nominal, nids)
    assert mask.sum() >= 15, "a defect always has a visible mask"
    diff = np.abs(img.astype(int) - ref.astype(int))
    changed = diff > 8
    # a defect changes the image inside its mask ...
    assert changed[mask].mean() > 0.1
    assert diff[mask].mean() > 8
    # ... and outside only through shadows: few pixels, next to the mask
    outside = changed & ~mask
    assert outside.sum() <= max(0.6 * mask.sum(), 25)
    # the label matches what was rendered
    _, _, label = render_sample(
        mode, view=view, size=size, seed=1, index=0, jitter=STILL, pin=(8, 2)
    )
    assert label["pin"]["row"] == 8 and label["pin"]["col"] == 2
    assert label["defect"] == mode and label["view"] == view
    if mode != "missing":
        assert set(label["severity"]) == {mode}


def test_good_sample_has_empty_mask():
    _img, mask, label = render_sample("good", view="top", size=48)
    assert not mask.any() and label["pin"] is None and label["defect"] == "good"


@pytest.mark.parametrize(
    "mode,pin",
    [
        ("missing", (4, 1)),
        ("missing", (0, 0)),
        ("shifted", (4, 1)),
        ("shifted", (8, 2)),
        ("pushed", (3, 1)),
    ],
)
def test_mask_equals_analytic_silhouette_union(mode, pin):
    """Top view, upright pins: mask == projected hull of the pin in the defect ∪ nominal scene."""
    size = 128
    view = "top"
    scene, nominal = build_sample_scenes(
        mode, views=(view,), seed=0, index=0, jitter=STILL, pin=pin
    )
    _, mask, _ = render_sample(mode, view=view, size=size, seed=0, index=0, jitter=STILL, pin=pin)
    name = pin_name(*pin)
    fields = [
        f
        for f in (_analytic_silhouette(s, name, view, size) for s in (scene, nominal))
        if f is not None
    ]
    dist = np.max(np.stack(fields), axis=0)  # union: inside either
    expected = dist > 0
    sure = np.abs(dist) > 1e-3  # pixel centres not on an edge
    assert expected.sum() > 20
    np.testing.assert_array_equal(mask[sure], expected[sure])
    assert (mask != expected).sum() <= 2


def test_combination_defect():
    _img, mask, label = render_sample("pushed+tilt_x", view="oblique", size=64, seed=2, index=0)
    assert set(label["severity"]) == {"pushed", "tilt_x"} and mask.any()


def test_import_synth_pulls_no_heavy_modules():
    code = (
        "import sys, gaikan, gaikan.synth, gaikan.cli.synth\n"
        "bad = [m for m in ('bpy', 'torch', 'timm', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- ray-casting properties

from hypothesis import given, settings
from hypothesis import strategies as st

from gaikan.synth import Material, Primitive, Sun

_unit = st.floats(-1.0, 1.0, allow_nan=False)


def _rotation(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["box", "cylinder"]),
    q=st.tuples(_unit, _unit, _unit, _unit).filter(lambda q: np.linalg.norm(q) > 0.1),
    half=st.tuples(st.floats(0.1, 2.0), st.floats(0.1, 2.0), st.floats(0.1, 2.0)),
    aim=st.tuples(_unit, _unit, _unit),
    src=st.tuples(_unit, _unit, _unit).filter(lambda v: np.linalg.norm(v) > 0.1),
)
def test_ray_hits_lie_on_the_surface(kind, q, half, aim, src):
    """Rays aimed from outside at an interior point hit the shape on its surface, facing the ray."""
    R = _rotation(q)
    c = np.array([0.3, -0.2, 0.5])
    if kind == "cylinder":
        half = (half[0], half[0], half[2])
    h = np.asarray(half)
    prim = Primitive("p", kind, tuple(c), tuple(R.ravel()), tuple(half), "m")
    scene = Scene([prim], {"m": Material(0.5)}, {}, Sun((0.0, 0.0, 1.0)))
    target_local = 0.9 * np.asarray(aim) * h
    if kind == "cylinder" and np.hypot(*target_local[:2]) > 0.9 * h[0]:
        target_local[:2] *= 0.9 * h[0] / np.hypot(*target_local[:2])
    target = c + R @ target_local
    o = c + 20.0 * np.asarray(src) / np.linalg.norm(src)
    d = (target - o) / np.linalg.norm(target - o)
    t, ids, n = cast(pack(scene), o, d[None])
    assert ids[0] == 1, "a ray through an interior point must hit"
    assert t[0] <= np.linalg.norm(target - o) + 1e-9
    p_local = R.T @ (o + t[0] * d - c)
    if kind == "box":
        assert np.all(np.abs(p_local) <= h + 1e-9)
        assert np.isclose(np.max(np.abs(p_local) / h), 1.0, atol=1e-9)
    else:
        rho = np.hypot(p_local[0], p_local[1])
        assert rho <= h[0] + 1e-9 and abs(p_local[2]) <= h[2] + 1e-9
        assert np.isclose(rho, h[0], atol=1e-9) or np.isclose(abs(p_local[2]), h[2], atol=1e-9)
    assert np.isclose(np.linalg.norm(n[0]), 1.0) and n[0] @ d < 0
    # shadow mode agrees on whether something is hit
    _, sid, _ = cast(pack(scene), o[None], d[None], any_hit=True)
    assert sid[0] == 1
