import csv

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gaikan
from conftest import plant_defect, structured_images
from gaikan.cli import cli


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sets = {
        "train/good": structured_images(12, seed=0),
        "test/good": structured_images(4, seed=5),
        "test/scratch": plant_defect(structured_images(4, seed=6))[0],
    }
    for folder, imgs in sets.items():
        (root / folder).mkdir(parents=True)
        for i, im in enumerate(imgs):
            Image.fromarray(im.astype(np.uint8)).save(root / folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def model(folders, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.gaikan"
    res = CliRunner().invoke(
        cli,
        [
            "fit",
            str(folders / "train" / "good"),
            "-o",
            str(path),
            "--kernel",
            "8",
            "--stride",
            "4",
            "--size",
            "40",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "saved" in res.output
    return path


def test_help_everywhere():
    runner = CliRunner()
    for args in ([], ["fit"], ["inspect"], ["demo"], ["bench"]):
        res = runner.invoke(cli, [*args, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


def test_fit_writes_loadable_model(model):
    det = gaikan.load(model)
    assert isinstance(det, gaikan.SOARTC) and det.kernel == 8 and det.image_shape_ == (40, 40)


def test_fit_accepts_mvtec_root_and_other_detectors(folders, tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "fit",
            str(folders),
            "-o",
            str(tmp_path / "m"),
            "--detector",
            "rt",
            "--size",
            "40",
            "-p",
            "threshold_quantile=0.9",
        ],
    )
    assert res.exit_code == 0, res.output
    det = gaikan.load(tmp_path / "m")
    assert (
        isinstance(det, gaikan.RTDetector) and det.n_train_ == 12 and det.threshold_quantile == 0.9
    )


def test_fit_variants_passes_kernel_on(folders, tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "fit",
            str(folders),
            "-o",
            str(tmp_path / "v"),
            "--detector",
            "variants",
            "--kernel",
            "8",
            "--stride",
            "4",
            "--size",
            "40",
            "-p",
            "n_variants=2",
        ],
    )
    assert res.exit_code == 0, res.output
    det = gaikan.load(tmp_path / "v")
    assert isinstance(det, gaikan.VariantDetector) and det.members_[0].kernel == 8


def test_inspect_outputs_and_labels(model, folders, tmp_path):
    (folders / "test" / "scratch" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    try:
        res = CliRunner().invoke(
            cli, ["inspect", str(model), str(folders / "test"), "-o", str(tmp_path)]
        )
    finally:
        (folders / "test" / "scratch" / "broken.png").unlink()
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 9
    broken = next(r for r in rows if r["file"].endswith("broken.png"))
    assert broken["verdict"] == "error" and "broken.png" in broken["error"]
    scored = [r for r in rows if r["verdict"] != "error"]
    # the display map's maximum is the image score, and its hottest point is given
    for r in scored:
        assert float(r["map_max"]) == pytest.approx(float(r["score"]), rel=1e-5)
        assert 0 <= int(r["peak_row"]) < 40 and 0 <= int(r["peak_col"]) < 40
    flagged = {r["folder_label"] for r in scored if r["verdict"] == "defect"}
    assert flagged == {"scratch"}
    assert sum(r["verdict"] == "defect" for r in scored) >= 3
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 8
    html = (tmp_path / "report.html").read_text()
    assert "image AUROC" in html and "broken.png" in html


def test_exit_codes(model, folders, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "junk.png"
    bad.write_text("junk")
    res = runner.invoke(
        cli,
        [
            "inspect",
            str(model),
            str(folders / "test" / "scratch"),
            "-o",
            str(tmp_path / "o1"),
            "--fail-on-defect",
        ],
    )
    assert res.exit_code == 1
    res = runner.invoke(cli, ["inspect", str(model), str(bad), "-o", str(tmp_path / "o2")])
    assert res.exit_code == 3 and "none of the images could be scored" in res.output
    res = runner.invoke(
        cli,
        [
            "inspect",
            str(model),
            str(folders / "test" / "good"),
            str(bad),
            "-o",
            str(tmp_path / "o3"),
            "--strict",
        ],
    )
    assert res.exit_code == 3 and "--strict" in res.output
    res = runner.invoke(
        cli, ["inspect", str(bad), str(folders / "test"), "-o", str(tmp_path / "o4")]
    )
    assert res.exit_code == 4 and "not a gaikan model file" in res.output
    res = runner.invoke(
        cli,
        ["fit", str(folders / "train" / "good"), "-o", str(tmp_path / "x"), "--detector", "nope"],
    )
    assert res.exit_code == 2 and "unknown detector" in res.output
    res = runner.invoke(
        cli, ["fit", str(folders / "train" / "good"), "-o", str(tmp_path / "x"), "-p", "colour=1"]
    )
    assert res.exit_code == 2 and "no parameter" in res.output
    res = runner.invoke(
        cli, ["fit", str(folders / "test" / "scratch"), "-o", str(tmp_path / "x"), "--size", "40"]
    )
    assert res.exit_code == 3 and "at least 5" in res.output


def test_threshold_override(model, folders, tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "inspect",
            str(model),
            str(folders / "test" / "good"),
            "-o",
            str(tmp_path),
            "--threshold",
            "1e-9",
            "--no-overlays",
        ],
    )
    assert res.exit_code == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert all(r["verdict"] == "defect" for r in rows)
    assert not (tmp_path / "overlays").exists()


@pytest.mark.slow
def test_bench_on_mvtec_folder(folders):
    res = CliRunner().invoke(
        cli,
        [
            "bench",
            str(folders),
            "--detectors",
            "soartc,rt,soartc[map_baseline=median]",
            "--size",
            "40",
            "--kernel",
            "8",
            "--stride",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.rstrip().endswith("%")]
    assert len(lines) == 3 and "map_baseline=median" in lines[2]
    auc = float(lines[0].split()[3])
    assert auc >= 0.9


def test_split_top_keeps_nested_brackets():
    from gaikan.cli._common import split_top as _split_top

    assert _split_top('padim,padim[layers=[2,3];k=8],v[p={"a":1,"b":2}]', ",") == [
        "padim",
        "padim[layers=[2,3];k=8]",
        'v[p={"a":1,"b":2}]',
    ]
    assert _split_top("layers=[2,3];k=8", ";") == ["layers=[2,3]", "k=8"]


def _inspect(model, *args):
    return CliRunner().invoke(cli, ["inspect", str(model), *map(str, args)])


@pytest.mark.parametrize("bad", ["nan", "inf", "-1"])
def test_threshold_must_be_finite_and_non_negative(model, folders, tmp_path, bad):
    res = _inspect(model, folders / "test" / "good", "-o", tmp_path, "--threshold", bad)
    assert res.exit_code == 2 and "finite number" in res.output
    assert "Traceback" not in res.output


def test_fail_on_defect_fails_on_parts_not_inspected(model, folders, tmp_path):
    blank = tmp_path / "in" / "blank.png"
    blank.parent.mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(blank)  # a lens cap
    good = folders / "test" / "good"
    res = _inspect(
        model, good, blank, "-o", tmp_path / "a", "--fail-on-defect", "--threshold", "1e9"
    )
    assert res.exit_code == 3 and "could not be inspected" in res.output
    rows = {r["file"]: r for r in csv.DictReader(open(tmp_path / "a" / "results.csv"))}
    assert rows[str(blank)]["verdict"] == "error" and rows[str(blank)]["error"]
    res = _inspect(
        model,
        good,
        blank,
        "-o",
        tmp_path / "b",
        "--fail-on-defect",
        "--allow-errors",
        "--threshold",
        "1e9",
    )
    assert res.exit_code == 0, res.output
    # a defect outranks a part that was not inspected
    res = _inspect(
        model, folders / "test" / "scratch", blank, "-o", tmp_path / "c", "--fail-on-defect"
    )
    assert res.exit_code == 1


def test_interrupted_run_keeps_its_rows(model, folders, tmp_path, monkeypatch):
    from gaikan.inspection import Inspector

    real = Inspector.judge
    calls = []

    def judge(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Inspector, "judge", judge)
    res = _inspect(model, folders / "test", "-o", tmp_path, "--batch-size", "3")
    assert res.exit_code == 130, res.output
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 3 and all(r["verdict"] in ("ok", "defect") for r in rows)
    html = (tmp_path / "report.html").read_text()
    assert "Incomplete run" in html and "interrupted after 3 of 8 files" in html


def test_internal_error_exit_5_without_traceback(model, folders, tmp_path, monkeypatch):
    from gaikan.inspection import Inspector

    def boom(self, *a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(Inspector, "judge", boom)
    monkeypatch.delenv("GAIKAN_DEBUG", raising=False)
    res = _inspect(model, folders / "test", "-o", tmp_path)
    assert res.exit_code == 5 and "kaboom" in res.output and "Traceback" not in res.output


def test_fit_warns_about_outliers_and_drops_them(folders, tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    good = structured_images(20, seed=3)
    bad = plant_defect(structured_images(3, seed=4), delta=120.0)[0]
    for i, im in enumerate([*good, *bad]):
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).save(train / f"{i:03d}.png")
    args = ["fit", str(train), "-o", str(tmp_path / "m.gaikan"), "--kernel", "8", "--stride", "4"]
    res = CliRunner().invoke(cli, [*args, "--size", "40"])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and all(f"{i:03d}.png" in res.output for i in (20, 21, 22))
    raised = gaikan.load(tmp_path / "m.gaikan").threshold_
    res = CliRunner().invoke(cli, [*args, "--size", "40", "--drop-outliers"])
    assert res.exit_code == 0, res.output
    det = gaikan.load(tmp_path / "m.gaikan")
    assert det.n_train_ == 20 and det.threshold_ < raised / 2


def test_inspect_record_keeps_every_result(model, folders, tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from gaikan.records import RecordStore

    db = tmp_path / "r.db"
    res = _inspect(model, folders / "test", "-o", tmp_path / "o", "--record", "--db", db)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    assert RecordStore(str(db)).count() == len(rows) == 8


def test_fit_hints_at_tiles_when_the_images_are_shrunk_a_lot(tmp_path):
    train = tmp_path / "long"
    train.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # elongated 60 x 200 parts
        Image.fromarray(rng.integers(90, 110, (60, 200)).astype(np.uint8)).save(train / f"{i}.png")
    base = ["fit", str(train), "-o", str(tmp_path / "m.gaikan"), "--kernel", "8", "--stride", "4"]
    res = CliRunner().invoke(cli, [*base, "--size", "40"])  # the long side shrunk 5 x
    assert res.exit_code == 0, res.output
    assert "these images are 60×200" in res.output and "--tile 256 --overlap 32" in res.output
    res = CliRunner().invoke(cli, ["--lang", "ja", *base, "--size", "40"])
    assert res.exit_code == 0 and "画像は 60×200" in res.output, res.output
    # a mild resize, or tiles at full resolution: nothing to say
    res = CliRunner().invoke(cli, [*base, "--size", "30x100"])
    assert res.exit_code == 0 and "--tile" not in res.output, res.output
    res = CliRunner().invoke(cli, [*base, "--tile", "40", "--overlap", "8"])
    assert res.exit_code == 0 and "--tile" not in res.output, res.output
    assert len(gaikan.load(tmp_path / "m.gaikan").inners_) == 2 * 6  # one per tile position
    shared = [*base, "--tile", "40", "--overlap", "8", "--tile-space", "shared"]
    res = CliRunner().invoke(cli, shared)
    assert res.exit_code == 0, res.output
    det = gaikan.load(tmp_path / "m.gaikan")
    assert len(det.inners_) == 1 and det.per_position is False  # one for every tile
