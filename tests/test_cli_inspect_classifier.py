"""`gaikan inspect` on a classifier model file: class + confidence + maps."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("timm")

pytestmark = pytest.mark.deep


@pytest.mark.parametrize("kw", [{}, {"reference": True, "focus": 16}], ids=["plain", "focus"])
def test_inspect_classifier_model(tmp_path, kw):
    from gaikan.cli import cli
    from gaikan.deep.classify import Classifier

    rng = np.random.default_rng(0)
    X = rng.normal(110, 10, (40, 32, 32))
    y = np.array(["good", "scratch"] * 20)
    X[1::2, 10:14, 3:29] += 100
    clf = Classifier(
        "test_efficientnet",
        pretrained=False,
        image_size=32,
        batch_size=16,
        num_threads=1,
        random_state=0,
        **kw,
    )
    clf.fine_tune(X.clip(0, 255), y, epochs=3, base_lr=0.01)
    clf.save(tmp_path / "clf.gaikan")
    for i, cls in enumerate(["good", "scratch"]):
        (tmp_path / "in" / cls).mkdir(parents=True)
        Image.fromarray(X[i].clip(0, 255).astype(np.uint8)).save(tmp_path / "in" / cls / "a.png")
    (tmp_path / "in" / "good" / "junk.png").write_text("junk")
    res = CliRunner().invoke(
        cli,
        [
            "inspect",
            str(tmp_path / "clf.gaikan"),
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["class"] for r in rows if not r["error"]] == clf.predict(X[:2]).tolist()
    assert all(0.5 <= float(r["confidence"]) <= 1 for r in rows if not r["error"])
    assert any("junk.png" in r["error"] for r in rows)
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 2
    html = (tmp_path / "out" / "report.html").read_text()
    assert "class scratch" in html and "Worst parts" in html
    # one verdict rule: ok exactly when 1 − P(good) ≤ 0.5, the same column as for detectors
    for r in rows:
        if not r["error"]:
            assert r["verdict"] == ("defect" if float(r["score"]) > 0.5 else "ok")
    res = CliRunner().invoke(
        cli,
        [
            "inspect",
            str(tmp_path / "clf.gaikan"),
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "o2"),
            "--threshold",
            "3",
        ],
    )
    assert res.exit_code == 2 and "threshold must be in [0, 1]" in res.output
    res = CliRunner().invoke(
        cli, ["fit", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--detector", "classifier"]
    )
    assert res.exit_code == 2 and "gaikan train" in res.output
