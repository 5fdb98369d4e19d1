"""gaikan.synth on disk: MVTec layout, labels.jsonl, determinism, CLI, an AUROC floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gaikan
from gaikan.cli import cli
from gaikan.synth import count_images, iter_labels, make_dataset, render_sample

SMALL = dict(
    n_good=3,
    n_test_good=2,
    n_defect=2,
    defects=("missing", "pushed+tilt_x"),
    views=("top", "oblique"),
    size=48,
)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("synth") / "set", seed=7, **SMALL)


def test_mvtec_layout_and_labels(small_set: Path):
    root = small_set
    for view in ("top", "oblique"):
        assert sorted(p.name for p in (root / view / "train" / "good").iterdir()) == [
            "000.png",
            "001.png",
            "002.png",
        ]
        assert len(list((root / view / "test" / "good").iterdir())) == 2
        for d in ("missing", "pushed+tilt_x"):
            imgs = sorted(p.name for p in (root / view / "test" / d).iterdir())
            masks = sorted(p.name for p in (root / view / "ground_truth" / d).iterdir())
            assert imgs == ["000.png", "001.png"]
            assert masks == ["000_mask.png", "001_mask.png"]
        assert not (root / view / "ground_truth" / "good").exists()
    recs = list(iter_labels(root))
    assert len(recs) == count_images(3, 2, 2, SMALL["defects"], SMALL["views"]) == 2 * (3 + 2 + 4)
    files = {r["file"] for r in recs}
    assert len(files) == len(recs)
    for r in recs:
        img = np.asarray(Image.open(root / r["file"]))
        assert img.shape == (48, 48) and img.dtype == np.uint8
        assert r["layout"] == "mixed" and r["size"] == 48 and r["seed"] == 7
        assert set(r["camera"]) == {"position", "rotation", "fov_y"}
        if r["defect"] == "good":
            assert r["mask"] is None and r["pin"] is None and r["mask_pixels"] == 0
            continue
        m = np.asarray(Image.open(root / r["mask"]))
        assert set(np.unique(m)) <= {0, 255}
        assert (m > 0).sum() == r["mask_pixels"] > 0
        assert 0 <= r["pin"]["row"] < 9 and 0 <= r["pin"]["col"] < 3
        if r["defect"] == "pushed+tilt_x":
            assert set(r["severity"]) == {"pushed", "tilt_x"}
    # the same part is shown in every view: one pin per (split, defect, index)
    by_key = {}
    for r in recs:
        by_key.setdefault((r["split"], r["defect"], r["index"]), set()).add(json.dumps(r["pin"]))
    assert all(len(v) == 1 for v in by_key.values())
    meta = json.loads((root / "synth.json").read_text())
    assert meta["views"] == ["top", "oblique"] and meta["seed"] == 7


def test_files_equal_in_memory_render(small_set: Path):
    img, mask, _label = render_sample(
        "pushed+tilt_x", view="oblique", size=48, seed=7, split="test", index=1
    )
    np.testing.assert_array_equal(
        np.asarray(Image.open(small_set / "oblique/test/pushed+tilt_x/001.png")), img
    )
    m = np.asarray(Image.open(small_set / "oblique/ground_truth/pushed+tilt_x/001_mask.png")) > 0
    np.testing.assert_array_equal(m, mask)
    good, _, _ = render_sample("good", view="top", size=48, seed=7, split="train", index=2)
    np.testing.assert_array_equal(
        np.asarray(Image.open(small_set / "top/train/good/002.png")), good
    )


def test_same_seed_byte_identical_any_workers(small_set: Path, tmp_path: Path):
    again = make_dataset(tmp_path / "again", seed=7, workers=2, **SMALL)
    assert _files(again) == _files(small_set)
    other = make_dataset(tmp_path / "other", seed=8, **SMALL)
    a, b = _files(other), _files(small_set)
    assert a.keys() == b.keys() and a["top/train/good/000.png"] != b["top/train/good/000.png"]


def test_load_mvtec_reads_it(small_set: Path):
    io = pytest.importorskip("gaikan.io")
    if not hasattr(io, "load_mvtec"):
        pytest.skip("gaikan.io.load_mvtec not available yet")
    data = io.load_mvtec(small_set / "oblique")
    assert data.train.images.shape == (3, 48, 48)
    assert sorted(set(data.test_types)) == ["good", "missing", "pushed+tilt_x"]
    assert data.has_masks and data.masks[np.array(data.test_types) != "good"].any(axis=(1, 2)).all()


def test_classes_format(tmp_path: Path):
    root = make_dataset(tmp_path / "cls", n_good=2, n_test_good=1, n_defect=1, defects=("missing", "shifted"),
                        views=("oblique",), size=32, format="classes")  # fmt: skip
    classes = sorted(p.name for p in (root / "oblique").iterdir())
    assert classes == ["good", "missing", "shifted"]
    assert sorted(p.name for p in (root / "oblique" / "good").iterdir()) == [
        "test_000.png", "train_000.png", "train_001.png"]  # fmt: skip
    assert not list(root.rglob("*_mask.png"))
    assert len(list(iter_labels(root))) == 5


def test_progress_and_validation(tmp_path: Path):
    seen = []
    make_dataset(tmp_path / "p", n_good=2, n_test_good=0, n_defect=1, defects=("missing",), views=("top",),
                 size=24, progress=seen.append)  # fmt: skip
    assert sum(seen) == count_images(2, 0, 1, ("missing",), ("top",)) == 3
    for kw, msg in [
        (dict(layout="hex"), "layout"),
        (dict(defects=("bent",)), "unknown defect"),
        (dict(views=("side",)), "unknown view"),
        (dict(format="coco"), "format"),
        (dict(n_good=-1), "n_good"),
        (dict(severity={"bent": (1, 2)}), "severity"),
        (dict(renderer="povray"), "renderer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            make_dataset(
                tmp_path / "bad", **{"n_good": 1, "n_test_good": 0, "n_defect": 0, "size": 16, **kw}
            )


def test_cli_synth(tmp_path: Path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["synth", str(out), "--n-good", "2", "--n-test-good", "1", "--n-defect", "1",
                                 "--defects", "missing,tilt_y", "--views", "oblique", "--size", "32",
                                 "--seed", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "wrote 5 images" in r.output
    assert (out / "oblique/ground_truth/tilt_y/000_mask.png").is_file()
    assert len(list(iter_labels(out))) == 5
    img, _, _ = render_sample("tilt_y", view="oblique", size=32, seed=3, index=0)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "oblique/test/tilt_y/000.png")), img)
    bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "x"), "--defects", "missing,bent"])
    assert bad.exit_code == 2 and "bent" in bad.output
    bad = CliRunner().invoke(
        cli,
        [
            "synth",
            str(tmp_path / "x"),
            "--renderer",
            "blender",
            "--blender",
            str(tmp_path / "no-blender"),
        ],
    )
    assert bad.exit_code == 2 and "--blender" in bad.output and "gaikan[blender]" in bad.output
    bad = CliRunner().invoke(
        cli, ["synth", str(tmp_path / "x"), "--views", "side", "--n-good", "1"]
    )
    assert bad.exit_code == 2 and "unknown view" in bad.output


def test_soartc_finds_planted_defects():
    """AUROC floor: SOARTC (k8 s4) on a small oblique set finds every defect mode."""
    from gaikan.metrics import pixel_roc_auc, roc_auc

    view, size = "oblique", 128
    train = np.stack(
        [render_sample("good", view=view, size=size, split="train", index=i)[0] for i in range(25)]
    )
    goods = [render_sample("good", view=view, size=size, index=i)[:2] for i in range(6)]
    bad = [
        render_sample(m, view=view, size=size, index=i)[:2]
        for m in gaikan.synth.DEFECT_MODES
        for i in range(2)
    ]
    X = np.stack([g[0] for g in goods] + [b[0] for b in bad]).astype(float)
    M = np.stack([g[1] for g in goods] + [b[1] for b in bad])
    y = np.r_[np.zeros(len(goods)), np.ones(len(bad))]
    det = gaikan.SOARTC(kernel=8, stride=4).fit(train.astype(float))
    res = det.detect(X)
    assert roc_auc(y, res.scores) >= 0.95
    assert pixel_roc_auc(M, res.maps) >= 0.9
    assert res.is_defect[y == 1].mean() >= 0.8  # the threshold from the unit space flags them
