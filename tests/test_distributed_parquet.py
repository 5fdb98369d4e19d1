"""gaikan inspect --parquet: results.parquet holds results.csv's rows and columns (local and Dask)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")

import gaikan
from conftest import plant_defect, structured_images
from gaikan.inspection import CSV_COLUMNS
from gaikan.io import find_images


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("pq")
    gaikan.SOARTC(kernel=10, stride=5).fit(structured_images(20, seed=0)).save(root / "m.gaikan")
    for sub, imgs in (
        ("good", structured_images(9, seed=5)),
        ("scratch", plant_defect(structured_images(9, seed=6))[0]),
    ):
        (root / sub).mkdir()
        for i, img in enumerate(imgs):
            Image.fromarray(img.astype(np.uint8)).save(root / sub / f"{i:02d}.png")
    (root / "good" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root / "m.gaikan", find_images([str(root / "good"), str(root / "scratch")])


def _as_csv_cell(name, v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _check_same(out, n_files, batches):
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    f = pq.ParquetFile(out / "results.parquet")
    assert f.schema_arrow.names == list(CSV_COLUMNS)
    assert str(f.schema_arrow.field("score").type) == "double"
    assert f.metadata.num_row_groups == batches  # one row group per batch: written as it went
    table = f.read().to_pylist()
    assert len(rows) == len(table) == n_files
    for r, t in zip(rows, table):
        assert r == {k: _as_csv_cell(k, t[k]) for k in CSV_COLUMNS}
    verdicts = {t["verdict"] for t in table}
    assert {"ok", "defect", "error"} <= verdicts
    err = next(t for t in table if t["verdict"] == "error")
    assert err["score"] is None and "truncated.png" in err["error"]
    return table


def test_cli_inspect_parquet_matches_the_csv(parts, tmp_path):
    from click.testing import CliRunner

    from gaikan.cli import cli

    model, files = parts
    root = files[0].parent.parent
    res = CliRunner().invoke(
        cli,
        ["inspect", str(model), str(root / "good"), str(root / "scratch"),
         "-o", str(tmp_path), "--parquet", "--batch-size", "4", "--no-overlays"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    _check_same(tmp_path, len(files), batches=-(-len(files) // 4))


def test_dask_inspect_parquet_matches_the_csv_and_the_local_run(parts, tmp_path):
    distributed = pytest.importorskip("distributed")
    from gaikan.cli.inspect import run_inspection
    from gaikan.distributed import run_inspection_dask
    from gaikan.inspection import Inspector

    model, files = parts
    insp = Inspector(gaikan.load(model))
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    run_inspection(
        insp, files, tmp_path / "local", overlays=False, batch_size=4, parquet=True,
        show_progress=False,
    )  # fmt: skip
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        run_inspection_dask(
            model, insp, files, tmp_path / "dask", address=cluster.scheduler_address,
            overlays=False, batch_size=4, parquet=True,
        )  # fmt: skip
    n_batches = -(-len(files) // 4)
    local = _check_same(tmp_path / "local", len(files), n_batches)
    remote = _check_same(tmp_path / "dask", len(files), n_batches)
    # batches arrive in completion order on Dask: the same rows, possibly reordered by batch
    key = lambda t: t["file"]
    assert sorted(remote, key=key) == sorted(local, key=key)
