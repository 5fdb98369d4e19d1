"""One model, one file → one answer: gaikan inspect, its report and gaikan serve agree.

Same score, verdict, map statistics and hottest point (in the original
image's pixels) for every file, and the display map's maximum is the score
on every face.
"""

import csv
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from click.testing import CliRunner
from PIL import Image

from conftest import plant_defect, structured_images
from gaikan.cli import cli
from gaikan.service import create_app
from test_service import LiveServer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("agree")
    good = root / "train"
    good.mkdir()
    for i, im in enumerate(structured_images(12, size=40, seed=0)):
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).save(good / f"{i:02d}.png")
    test = root / "test"
    (test / "good").mkdir(parents=True)
    (test / "scratch").mkdir()
    bad, _ = plant_defect(structured_images(3, size=40, seed=6))
    for i, im in enumerate(structured_images(3, size=40, seed=5)):
        # stored at another size than the model's, so the hottest point is mapped back
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).resize((70, 50)).save(
            test / "good" / f"g{i}.png"
        )
    for i, im in enumerate(bad):
        Image.fromarray(im.clip(0, 255).astype(np.uint8)).resize((70, 50)).save(
            test / "scratch" / f"s{i}.png"
        )
    (test / "scratch" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    model = root / "m.gaikan"
    res = CliRunner().invoke(
        cli, ["fit", str(good), "-o", str(model), "--kernel", "8", "--stride", "4", "--size", "40"]
    )
    assert res.exit_code == 0, res.output
    return model, test, root / "out"


def test_cli_report_and_station_agree(setup):
    model, test, out = setup
    res = CliRunner().invoke(cli, ["inspect", str(model), str(test), "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["file"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert len(rows) == 7
    files = sorted(rows)
    with (
        LiveServer(create_app(str(model), workers=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as c,
    ):
        upload = [("files", (f, open(f, "rb").read(), "image/png")) for f in files]
        served = c.post("/v1/inspect", files=upload).json()["results"]
    html = (out / "report.html").read_text()
    scored = 0
    for f, s in zip(files, served):
        row = rows[f]
        assert s["verdict"] == row["verdict"], f
        if row["verdict"] == "error":
            assert "error" in s and row["error"]
            continue
        scored += 1
        assert s["score"] == pytest.approx(float(row["score"]), rel=1e-5)
        # the score-vs-map identity, on both faces
        assert float(row["map_max"]) == pytest.approx(float(row["score"]), rel=1e-5)
        assert s["map"]["max"] == s["score"]
        # the same hottest point, in the original image's pixels (50 x 70)
        assert (s["map"]["peak"]["row"], s["map"]["peak"]["col"]) == (
            int(row["peak_row"]),
            int(row["peak_col"]),
        )
        assert s["map"]["shape"] == [50, 70]
        # the report's row says the same
        cell = re.search(
            rf"<td>{re.escape(f)}</td><td class=\"(\w+)\">\w+</td><td>([^<]*)</td>"
            rf"<td>(\d+), (\d+)</td>",
            html,
        )
        assert cell, f
        assert cell.group(1) == row["verdict"]
        assert float(cell.group(2)) == pytest.approx(float(row["score"]), rel=1e-3)
        assert (int(cell.group(3)), int(cell.group(4))) == (
            int(row["peak_row"]),
            int(row["peak_col"]),
        )
    assert scored == 6
    assert {rows[f]["verdict"] for f in files if "scratch/s" in f} == {"defect"}
