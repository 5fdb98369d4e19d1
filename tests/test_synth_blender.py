"""Blender (Cycles) renderer: back-end choice, commands, errors, and real renders with bpy.

The tests marked ``blender`` render with the ``bpy`` module (``pip install
"gaikan[blender]"``) and are skipped, with the reason, where it cannot be
imported.  The others run everywhere: they check the subprocess commands,
the error messages and the dataset plumbing with stand-ins.
"""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gaikan.errors import GaikanError, ParameterError
from gaikan.synth import (
    Jitter,
    build_sample_scenes,
    iter_labels,
    make_dataset,
    render,
    render_ids,
)
from gaikan.synth import blender as bl

HAVE_BPY = importlib.util.find_spec("bpy") is not None
needs_bpy = pytest.mark.skipif(
    not HAVE_BPY, reason='bpy is not installed (pip install "gaikan[blender]")'
)


def _fake_blender(tmp_path: Path, body: str) -> Path:
    """An executable called ``blender`` that records its arguments and runs ``body``."""
    exe = tmp_path / "bin" / "blender"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(
        f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "{tmp_path}/argv"\n{body}\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.fixture
def no_blender(monkeypatch):
    """Hide every Blender: no env, no bpy in this Python, nothing on PATH."""
    for env in ("GAIKAN_BLENDER", "GAIKAN_BLENDER_PYTHON"):
        monkeypatch.delenv(env, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        bl.importlib.util, "find_spec", lambda n, *a: None if n == "bpy" else real(n, *a)
    )
    monkeypatch.setattr(bl.shutil, "which", lambda name, *a, **k: None)


# --------------------------------------------------------------- without Blender


def test_commands_for_both_back_ends():
    app = bl.Backend("executable", "/usr/bin/blender")
    cmd = app.command("jobs.json", "out")
    assert cmd[:2] == ["/usr/bin/blender", "-b"]
    assert cmd[cmd.index("--python-expr") + 1] == bl.BLENDER_SCRIPT
    assert cmd[cmd.index("--python-exit-code") + 1] == "1"  # a script error fails the process
    assert "--factory-startup" in cmd and cmd[-3:] == ["--", "jobs.json", "out"]
    mod = bl.Backend("module", "/venv/bin/python")
    assert mod.command("j", "o") == ["/venv/bin/python", "-c", bl.BLENDER_SCRIPT, "--", "j", "o"]


def test_neither_bpy_nor_blender_names_both_options(no_blender, tmp_path):
    with pytest.raises(bl.BlenderError) as e:
        bl.find_blender()
    msg = str(e.value)
    assert "gaikan[blender]" in msg and "--blender PATH" in msg
    # the dataset fails before writing anything
    with pytest.raises(GaikanError, match=r"gaikan\[blender\]"):
        make_dataset(tmp_path / "x", renderer="blender", n_good=1, n_test_good=0, n_defect=0)
    assert not (tmp_path / "x").exists()


def test_explicit_paths(no_blender, tmp_path):
    with pytest.raises(bl.BlenderError, match="does not exist") as e:
        bl.find_blender(tmp_path / "nope")
    assert "gaikan[blender]" in str(e.value)
    exe = _fake_blender(tmp_path, "exit 0")
    assert bl.find_blender(exe) == bl.Backend("executable", str(exe))
    py = tmp_path / "python-without-bpy"
    py.write_text("#!/bin/sh\nexit 1\n")
    py.chmod(0o755)
    with pytest.raises(bl.BlenderError, match="import bpy"):
        bl.find_blender(py)


def test_order_of_search(no_blender, monkeypatch, tmp_path):
    exe = _fake_blender(tmp_path, "exit 0")
    monkeypatch.setattr(
        bl.shutil, "which", lambda name, *a, **k: str(exe) if name == "blender" else None
    )
    assert bl.find_blender() == bl.Backend("executable", str(exe))
    monkeypatch.setattr(bl.importlib.util, "find_spec", lambda n, *a: object())
    assert bl.find_blender().kind == "module"  # bpy in this Python wins over PATH
    monkeypatch.setenv("GAIKAN_BLENDER", str(exe))
    monkeypatch.setattr(bl.shutil, "which", lambda name, *a, **k: None)
    assert bl.find_blender() == bl.Backend("executable", str(exe))  # the environment wins


def _jobs():
    scene, nominal = build_sample_scenes("missing", views=("top",), seed=0, index=0)
    return [
        {"scene": scene, "view": "top", "size": 24},
        {"scene": nominal, "view": "top", "size": 24, "ids_only": True},
    ]


def test_executable_gets_the_script_and_the_jobs(tmp_path):
    # exits 0 but prints nothing: not a finished render
    exe = _fake_blender(
        tmp_path, f'for last; do :; done; cp "$last/../jobs.json" "{tmp_path}/jobs.json"'
    )
    with pytest.raises(bl.BlenderError, match="failed"):
        bl.render_scenes(_jobs(), exe, samples=3, threads=2)
    argv = (tmp_path / "argv").read_bytes().split(b"\0")[:-1]
    assert argv[0] == b"-b" and argv[argv.index(b"--python-expr") + 1].decode() == bl.BLENDER_SCRIPT
    payload = json.loads((tmp_path / "jobs.json").read_text())
    assert payload["settings"] == {"threads": 2}
    a, b = payload["jobs"]
    assert a["size"] == [24, 24] and a["samples"] == 3 and not a["ids_only"] and b["ids_only"]
    assert a["scene"]["meta"]["defect"]["pin"] not in [p["name"] for p in a["scene"]["primitives"]]
    assert {L["name"] for L in a["look"]["lights"]} == {"key", "fill"}


def test_build_failure_names_the_part(tmp_path):
    err = json.dumps({"job": 1, "part": "pin_r3_c1", "error": "ValueError: bad matrix"})
    exe = _fake_blender(tmp_path, f"echo 'gaikan-blender-error {err}'; exit 3")
    with pytest.raises(bl.BlenderError, match=r"part 'pin_r3_c1' of job 1 \(view 'top'"):
        bl.render_scenes(_jobs(), exe)


def test_malformed_scene_is_caught_before_blender_starts(tmp_path):
    exe = _fake_blender(tmp_path, "exit 0")
    scene = _jobs()[0]["scene"].to_dict()
    scene["primitives"][5]["material"] = "gold"
    with pytest.raises(ParameterError, match=r"part 'pin_r1_c0'.*material 'gold'"):
        bl.render_scenes([{"scene": scene, "view": "top", "size": 8}], exe)
    scene["primitives"][5]["material"] = "pin"
    scene["primitives"][5]["half"] = [0.25, 0.25, 0.0]
    with pytest.raises(ParameterError, match=r"part 'pin_r1_c0'.*half extents"):
        bl.render_scenes([{"scene": scene, "view": "top", "size": 8}], exe)
    assert not (tmp_path / "argv").exists()


def test_look_is_seeded_and_varies():
    scene, _ = build_sample_scenes("good", views=("top",), seed=0, index=0)
    rng = lambda *k: np.random.default_rng(list(k))
    a = bl.draw_look(bl.Look(), scene, rng(1), rng(2))
    assert a == bl.draw_look(bl.Look(), scene, rng(1), rng(2))
    b = bl.draw_look(bl.Look(), scene, rng(1), rng(3))
    assert a["lights"] != b["lights"] and a["seed"] != b["seed"]
    assert a["roughness"] == b["roughness"]  # roughness belongs to the part
    c = bl.draw_look(bl.Look(), scene, rng(4), rng(2))
    assert a["roughness"] != c["roughness"]
    flat = bl.Look().varied(0.0)
    assert (
        bl.draw_look(flat, scene, rng(1), rng(2))["lights"] == bl.draw_look(flat, scene)["lights"]
    )
    # the key light sits in the direction of the scene's sun
    key = np.asarray(bl.draw_look(flat, scene)["lights"][0]["position"])
    np.testing.assert_allclose(key / np.linalg.norm(key), scene.sun.direction, atol=1e-9)


def test_to_uint8():
    lin = np.linspace(0, 1.2, 12).reshape(3, 4)
    u = bl.to_uint8(lin)
    assert (
        u.dtype == np.uint8
        and u[0, 0] == 0
        and u[-1, -1] == 255
        and (np.diff(u.ravel()) >= 0).all()
    )
    assert abs(float(bl.srgb_encode(np.array(0.21404114))) - 0.5) < 1e-6  # sRGB mid grey
    assert bl.to_uint8(np.full((2, 2), 0.0031308 / 2))[0, 0] == 5  # the linear toe
    n1 = bl.to_uint8(lin, noise_sigma=2, rng=np.random.default_rng(0))
    n2 = bl.to_uint8(lin, noise_sigma=2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(n1, n2)
    with pytest.raises(ParameterError, match="rng"):
        bl.to_uint8(lin, noise_sigma=2)


def test_dataset_plumbing_with_stand_in_renderer(tmp_path, monkeypatch):
    """make_dataset(renderer="blender"): jobs, ids → masks, noise, files, labels.

    The Blender subprocess is replaced by the numpy ray caster returning
    linear values (noise-free, as Blender's output is), so masks and labels
    must equal the numpy renderer's and images agree to ±1 grey level.
    """
    calls = []

    def stand_in(jobs, blender=None, **kw):
        calls.append((len(jobs), kw["threads"], kw["samples"]))
        out = []
        for j in jobs:
            assert j.get("ids_only") or "look" in j  # per-image look drawn by gaikan
            img, ids = render(j["scene"], j["view"], j["size"])
            lin = ((img / 255.0 + 0.055) / 1.055) ** 2.4  # inverse sRGB: to_uint8 gives img back
            out.append((None if j.get("ids_only") else lin, ids))
        return out

    monkeypatch.setattr(bl, "render_scenes", stand_in)
    monkeypatch.setattr(bl, "find_blender", lambda b=None: bl.Backend("module", "unused"))
    kw = dict(
        n_good=2,
        n_test_good=0,
        n_defect=5,
        defects=("missing",),
        views=("top", "oblique"),
        size=32,
        seed=4,
    )
    a = make_dataset(tmp_path / "b", renderer="blender", samples=5, threads=2, workers=2, **kw)
    b = make_dataset(tmp_path / "n", **kw)
    # chunks of 8 samples: 7 samples → one chunk; 2 goods × 2 views + 5 defects × 2 views × 2
    assert calls == [(4 + 20, 2, 5)]

    def px(root, rel):
        return np.asarray(Image.open(root / rel)).astype(int)

    for rel in ("top/train/good/001.png", "oblique/test/missing/004.png"):
        d = np.abs(px(a, rel) - px(b, rel))
        assert d.max() <= 1 and d.mean() < 0.6
    np.testing.assert_array_equal(
        px(a, "oblique/ground_truth/missing/004_mask.png"),
        px(b, "oblique/ground_truth/missing/004_mask.png"),
    )
    assert (a / "labels.jsonl").read_text() == (b / "labels.jsonl").read_text()
    meta = json.loads((a / "synth.json").read_text())
    assert meta["renderer"] == "blender" and meta["blender"]["samples"] == 5


def test_blender_only_options_are_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "find_blender", lambda b=None: bl.Backend("module", "unused"))
    with pytest.raises(ParameterError, match="supersample"):
        make_dataset(tmp_path / "x", renderer="blender", supersample=2)
    with pytest.raises(ParameterError, match="samples"):
        make_dataset(tmp_path / "x", renderer="blender", samples=0)


def test_cli_blender_errors(tmp_path):
    from click.testing import CliRunner

    from gaikan.cli import cli

    r = CliRunner().invoke(
        cli,
        [
            "synth",
            str(tmp_path / "x"),
            "--renderer",
            "blender",
            "--blender",
            str(tmp_path / "nope"),
        ],
    )
    assert r.exit_code == 2 and "does not exist" in r.output and "gaikan[blender]" in r.output
    r = CliRunner().invoke(cli, ["synth", str(tmp_path / "x"), "--samples", "4"])
    assert r.exit_code == 2 and "--renderer blender" in r.output


def test_synth_does_not_import_bpy():
    import subprocess
    import sys

    code = "import gaikan, gaikan.synth, gaikan.synth.blender, sys; print('bpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


# --------------------------------------------------------------- with bpy

TINY = dict(
    n_good=2,
    n_test_good=1,
    n_defect=1,
    defects=("missing", "tilt_y", "shifted"),
    views=("oblique",),
    size=64,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    if not HAVE_BPY:
        pytest.skip('bpy is not installed (pip install "gaikan[blender]")')
    root = tmp_path_factory.mktemp("blender")
    a = make_dataset(root / "a", renderer="blender", samples=4, **TINY)
    b = make_dataset(root / "b", renderer="blender", samples=4, **TINY)
    n = make_dataset(root / "n", **TINY)
    return a, b, n


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.blender
@needs_bpy
def test_blender_set_layout_masks_and_determinism(tiny_sets):
    a, b, n = tiny_sets
    fa, fn = _files(a), _files(n)
    assert fa.keys() == fn.keys()  # same MVTec layout and file names as the numpy renderer
    assert len([k for k in fa if k.endswith(".png") and "_mask" not in k]) == 6
    assert fa == _files(b)  # same seed → the same bytes
    recs = list(iter_labels(a))
    strip = lambda r: {k: v for k, v in r.items() if k != "mask_pixels"}
    assert [strip(r) for r in recs] == [strip(r) for r in iter_labels(n)]
    imgs = []
    for r in recs:
        img = np.asarray(Image.open(a / r["file"]))
        assert img.shape == (64, 64) and img.dtype == np.uint8 and img.std() > 10
        imgs.append(img.astype(int))
        if r["defect"] == "good":
            assert r["mask"] is None and r["mask_pixels"] == 0
        else:
            m = np.asarray(Image.open(a / r["mask"])) > 0
            assert m.sum() == r["mask_pixels"] > 0
    # good parts are not pixel-identical, and differ by more than sensor noise
    assert np.abs(imgs[0] - imgs[1]).mean() > 1.0


@pytest.mark.blender
@needs_bpy
def test_blender_mask_outlines_the_changed_pin(tiny_sets):
    a, _, n = tiny_sets
    for r in iter_labels(a):
        if r["defect"] == "good":
            continue
        m = np.asarray(Image.open(a / r["mask"])) > 0
        ref = np.asarray(Image.open(n / r["mask"])) > 0
        # exact geometry: only pixel centres on a silhouette edge may differ
        assert (m != ref).sum() <= max(3, 0.05 * ref.sum()), r["file"]
        # and it is the labelled pin: its nominal silhouette lies in the mask
        _, nominal = build_sample_scenes(
            r["defect"], views=("oblique",), seed=TINY["seed"], index=r["index"]
        )
        pin = render_ids(nominal, "oblique", 64) == nominal.index(r["pin"]["name"])
        assert (m & pin).sum() >= 0.9 * pin.sum() > 0


@pytest.mark.blender
@needs_bpy
def test_blender_ids_match_numpy_ids():
    size = 48
    scene, nominal = build_sample_scenes(
        "tilt_y", views=("top",), seed=0, index=0, jitter=Jitter().scaled(0.0), pin=(4, 2)
    )
    (img, ids), (none, nids) = bl.render_scenes(
        [
            {"scene": scene, "view": "top", "size": size},
            {"scene": nominal, "view": "top", "size": size, "ids_only": True},
        ],
        samples=2,
    )
    assert none is None and img is not None and img.dtype == np.float32
    assert (ids != render_ids(scene, "top", size)).mean() < 0.01
    assert (nids != render_ids(nominal, "top", size)).mean() < 0.01
    assert set(np.unique(ids)) == set(range(1, len(scene.primitives) + 1))


@pytest.mark.blender
@needs_bpy
def test_blender_build_failure_in_blender_names_the_part():
    job = _jobs()[0]
    look = bl.draw_look(bl.Look(), job["scene"])
    look["lights"][0]["power"] = "bright"
    with pytest.raises(bl.BlenderError, match=r"could not build part 'lights' of job 0"):
        bl.render_scenes([{**job, "look": look}], samples=1)


def test_blender_module_does_not_import_the_dataset_module():
    """Issue 12: imports point one way (dataset → blender → scene), no cycle."""
    import ast

    tree = ast.parse(Path(bl.__file__).read_text())
    imported = {
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level > 0 and n.module is not None
    }
    assert imported <= {"errors", "scene"}, imported
