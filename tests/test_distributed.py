"""gaikan inspect on Dask: same rows as a local run, bad files as error rows, worker deaths survived."""

from __future__ import annotations

import csv
import os
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

import gaikan
from conftest import plant_defect, structured_images
from gaikan.errors import ParameterError
from gaikan.inspection import Inspector, ResultsCSV, folder_labeller, inspect_files
from gaikan.io import find_images


def _cluster():
    return distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    )


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as c:
        yield c


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A SOARTC model and a labelled folder of good and defective parts, plus broken files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("parts")
    gaikan.SOARTC(kernel=10, stride=5).fit(structured_images(30, seed=0)).save(root / "m.gaikan")
    for sub, imgs in (
        ("good", structured_images(24, seed=5)),
        ("scratch", plant_defect(structured_images(24, seed=6))[0]),
    ):
        (root / sub).mkdir()
        for i, img in enumerate(imgs):
            Image.fromarray(img.astype(np.uint8)).save(root / sub / f"{i:02d}.png")
    (root / "good" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "scratch" / "notes.png").write_bytes(b"not an image at all")
    files = find_images([str(root / "good"), str(root / "scratch")])
    return root / "m.gaikan", files


def _local(model, files, **kw):
    insp = Inspector(gaikan.load(model))
    return [r for b in inspect_files(insp, files, label_of=folder_labeller(files), **kw) for r in b]


def _fields(r):
    d = asdict(r)
    d.pop("display")
    return d


def test_same_rows_scores_and_verdicts_as_a_local_run(cluster, parts):
    from gaikan.distributed import inspect_files_dask

    model, files = parts
    local = _local(model, files, batch_size=5)
    batches = list(
        inspect_files_dask(
            model,
            files,
            cluster.scheduler_address,
            batch_size=5,
            label_of=folder_labeller(files),
        )
    )
    assert all(len(b) <= 5 for b in batches) and len(batches) == -(-len(files) // 5)
    got = [r for b in batches for r in b]
    assert sorted(r.file for r in got) == sorted(str(f) for f in files)  # each file once
    by_file = {r.file: r for r in got}
    for r in local:
        assert _fields(by_file[r.file]) == _fields(r)  # scores to the bit, verdicts, peaks, labels
    verdicts = [r.verdict for r in got]
    assert verdicts.count("error") == 2 and "defect" in verdicts and "ok" in verdicts
    errors = {Path(r.file).name: r.error for r in got if r.is_error}
    assert set(errors) == {"truncated.png", "notes.png"}
    assert errors == {Path(r.file).name: r.error for r in local if r.is_error}


def test_ordered_results_come_in_input_order(cluster, parts):
    from gaikan.distributed import inspect_files_dask

    model, files = parts
    got = [
        r
        for b in inspect_files_dask(
            model, files, cluster.scheduler_address, batch_size=3, ordered=True, threshold=1e9
        )
        for r in b
    ]
    assert [r.file for r in got] == [str(f) for f in files]
    assert {r.verdict for r in got} == {"ok", "error"}  # the threshold override reached the workers


def test_run_inspection_dask_writes_results_csv_and_overlays(cluster, parts, tmp_path):
    from gaikan.cli.inspect import run_inspection
    from gaikan.distributed import run_inspection_dask

    model, files = parts
    insp = Inspector(gaikan.load(model))
    (tmp_path / "local").mkdir()
    (tmp_path / "dask").mkdir()
    run_inspection(insp, files, tmp_path / "local", batch_size=7, show_progress=False)
    with distributed.Client(cluster.scheduler_address) as client:
        done: list[int] = []
        results, incomplete = run_inspection_dask(
            model,
            insp,
            files,
            tmp_path / "dask",
            address=client,
            batch_size=7,
            progress=done.append,
        )
    assert incomplete is None and len(results) == len(files)
    assert sum(done) == len(files)  # progress hears of every file once

    def rows(p):
        with open(p / "results.csv", newline="") as fh:
            return sorted(tuple(r.values()) for r in csv.DictReader(fh))

    assert rows(tmp_path / "dask") == rows(tmp_path / "local")
    local_png = sorted(p.name for p in (tmp_path / "local" / "overlays").iterdir())
    dask_png = sorted(p.name for p in (tmp_path / "dask" / "overlays").iterdir())
    assert dask_png == local_png and len(dask_png) == len(files) - 2
    one = dask_png[0]
    assert (tmp_path / "dask" / "overlays" / one).read_bytes() == (
        tmp_path / "local" / "overlays" / one
    ).read_bytes()


def test_a_worker_killed_mid_run_loses_and_duplicates_no_row(parts, tmp_path):
    from gaikan.distributed import inspect_files_dask

    model, files = parts
    files = files * 4  # 200 rows in 100 batches: plenty in flight when the worker dies
    with _cluster() as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = None
        with ResultsCSV(tmp_path / "results.csv") as out:
            for batch in inspect_files_dask(model, files, client, batch_size=2, max_in_flight=40):
                out.write(batch)
                if killed is None:
                    busy = [a for a, tasks in client.processing().items() if tasks and a in pids]
                    victim = busy[0] if busy else next(iter(pids))
                    killed = (victim, len(client.processing().get(victim, ())))
                    os.kill(pids[victim], signal.SIGKILL)
        after = client.run(os.getpid)
    assert killed is not None and killed[1] >= 1  # it died holding work
    assert pids[killed[0]] not in after.values()  # and was replaced
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(files)
    # every file exactly 4 times (it was listed 4 times), none lost, none duplicated
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["file"]] = counts.get(r["file"], 0) + 1
    assert counts == {str(f): 4 for f in set(files)}
    local = {r.file: r.to_row() for r in _local(model, sorted(set(files)), batch_size=8)}
    for r in rows:
        want = dict(local[r["file"]], folder_label="")  # no labeller in this run
        assert r == want


def test_bad_addresses_and_batch_sizes_are_parameter_errors(parts):
    from gaikan.distributed import inspect_files_dask, open_client

    model, files = parts
    for bad in ("local:0", "local:two"):
        with pytest.raises(ParameterError, match="local:N"):
            open_client(bad)
    with pytest.raises(ParameterError, match="batch_size"):
        next(inspect_files_dask(model, files, "local:1", batch_size=0))


@pytest.mark.deep
def test_an_exported_model_runs_on_the_workers(cluster, tmp_path):
    """An onnx-detector file (torch-free on the workers) gives the local scores on Dask."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from gaikan.deep import PaDiM
    from gaikan.deep.export import export_detector
    from gaikan.distributed import inspect_files_dask

    good = structured_images(12, size=64, seed=0)
    export_detector(PaDiM(num_threads=1, n_features=24).fit(good)).save(tmp_path / "m.gaikan")
    bad = plant_defect(structured_images(6, size=64, seed=3), box=10)[0]
    for i, img in enumerate(np.concatenate([structured_images(6, size=64, seed=2), bad])):
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    files = find_images([str(tmp_path)])
    local = {r.file: r for r in _local(tmp_path / "m.gaikan", files, batch_size=4)}
    got = [
        r
        for b in inspect_files_dask(tmp_path / "m.gaikan", files, cluster.scheduler_address, 4)
        for r in b
    ]
    assert len(got) == len(files) == 12
    for r in got:
        assert r.score == pytest.approx(local[r.file].score, rel=1e-6)
        assert r.verdict == local[r.file].verdict
    assert "defect" in {r.verdict for r in got}
