"""`gaikan train` through click's CliRunner on a tiny ImageFolder tree."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("timm")

pytestmark = pytest.mark.deep


def image_folder(root, n=36, size=32, seed=0):
    rng = np.random.default_rng(seed)
    for cls in ("good", "scratch"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = rng.normal(110, 10, (size, size))
            if cls == "scratch":
                r = rng.integers(2, size - 6)
                img[r : r + 4, 3 : size - 3] += 100
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{i}.png")
    (root / "good" / "broken.png").write_bytes(b"not a png")
    return root


def test_train_writes_model_and_report(tmp_path):
    from gaikan.cli import cli
    from gaikan.deep.classify import Classifier

    data = image_folder(tmp_path / "data")
    out = tmp_path / "m.gaikan"
    rep = tmp_path / "report"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            str(data),
            "-o",
            str(out),
            "--backbone",
            "test_efficientnet",
            "--no-pretrained",
            "--epochs",
            "3",
            "--base-lr",
            "0.01",
            "--batch-size",
            "16",
            "--size",
            "48",
            "--threads",
            "1",
            "--report",
            str(rep),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "broken.png" in res.output
    assert "72 images" in res.output
    clf = Classifier.load(out)
    assert clf.classes_.tolist() == ["good", "scratch"]
    assert len(clf.history_) == 4
    html = (rep / "index.html").read_text()
    for part in ("Training curves", "confusion matrix", "Top losses", "broken.png"):
        assert part in html
    assert html.count("data:image/png;base64,") >= 3


def test_train_vit_soart(tmp_path):
    from gaikan.cli import cli
    from gaikan.deep.classify import ViTClassifier

    data = image_folder(tmp_path / "data", n=20)
    out = tmp_path / "v.gaikan"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            str(data),
            "-o",
            str(out),
            "--backbone",
            "vit-soart",
            "--epochs",
            "1",
            "--freeze-epochs",
            "0",
            "--size",
            "32",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    clf = ViTClassifier.load(out)
    assert clf.input == "soart" and clf.predict_proba(np.zeros((2, 32, 32))).shape == (2, 2)


def test_train_reference_focus(tmp_path):
    from gaikan.cli import cli
    from gaikan.deep.classify import Classifier

    data = image_folder(tmp_path / "data", n=20)
    out = tmp_path / "f.gaikan"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            str(data),
            "-o",
            str(out),
            "--backbone",
            "test_efficientnet",
            "--no-pretrained",
            "--epochs",
            "1",
            "--size",
            "32",
            "--focus",
            "16",
            "--net-size",
            "32",
            "--threads",
            "1",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    clf = Classifier.load(out)
    assert clf.reference and clf.focus == 16 and clf.reference_.shape == (32, 32)
    assert clf.input_pipeline().size == (32, 32)
    res = CliRunner().invoke(
        cli, ["train", str(data), "-o", str(out), "--backbone", "vit-raw", "--reference"]
    )
    assert res.exit_code == 2 and "CNN backbones" in res.output
    res = CliRunner().invoke(cli, ["train", str(data), "-o", str(out), "--focus", "0"])
    assert res.exit_code == 2 and "--focus" in res.output


def test_train_errors(tmp_path):
    from gaikan.cli import cli

    (tmp_path / "only").mkdir()
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "empty"), "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "no images found" in res.output
    image_folder(tmp_path / "one", n=3)
    import shutil

    shutil.rmtree(tmp_path / "one" / "scratch")
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "one"), "-o", str(tmp_path / "m")])
    assert res.exit_code == 3 and "two class" in res.output


@pytest.mark.parametrize(
    ("args", "name"),
    [(["--batch-size", "0"], "batch_size"), (["--valid-frac", "1.5"], "valid_frac")],
)
def test_train_names_a_bad_parameter(tmp_path, args, name):
    """fit validates the parameters: the CLI reports the one that is wrong, before training."""
    from gaikan.cli import cli

    data = image_folder(tmp_path / "data", n=4)
    out = tmp_path / "m.gaikan"
    base = ["train", str(data), "-o", str(out), "--backbone", "test_efficientnet"]
    res = CliRunner().invoke(cli, [*base, "--no-pretrained", "--size", "32", "--quiet", *args])
    assert res.exit_code == 2 and name in res.output, res.output
    assert not out.exists()
