"""gaikan fit on Dask: the model equals the single-process fit (per kind), merges are exact."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gaikan
from conftest import plant_defect, structured_images
from gaikan.errors import ParameterError
from gaikan.io import find_images, load_images
from gaikan.taguchi.moments import Moments, merge_all

CLOSED = [
    ("soartc", lambda: gaikan.SOARTC(kernel=10, stride=5)),
    ("soart3map", lambda: gaikan.SOART3Map(kernel=10, stride=5)),
    ("rt", lambda: gaikan.RTDetector(kernel=10, stride=5)),
]


def _same_model(a, b, rtol=1e-9):
    sa, _ = a._get_state()
    sb, _ = b._get_state()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        scale = float(np.max(np.abs(sa[k]))) or 1.0
        np.testing.assert_allclose(sb[k], sa[k], rtol=0, atol=rtol * scale, err_msg=k)
    np.testing.assert_allclose(b.train_scores_, a.train_scores_, rtol=rtol * 100)
    assert b.threshold_ == pytest.approx(a.threshold_, rel=rtol * 100)
    np.testing.assert_allclose(b.pixel_mean_, a.pixel_mean_, rtol=1e-12)
    np.testing.assert_allclose(b.pixel_std_, a.pixel_std_, rtol=1e-9)
    assert (b.n_train_, b.image_shape_) == (a.n_train_, a.image_shape_)


# -- the maths, no cluster --------------------------------------------------------------
def test_moments_merge_exactly_in_any_tree():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (37, 4, 3)) * np.array([1.0, 10.0, 1e-3])
    whole = Moments.of(x)
    parts = [Moments.of(x[a:b]) for a, b in ((0, 1), (1, 9), (9, 20), (20, 37))]
    merged = merge_all(parts)
    assert merged.n == 37
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-11, atol=1e-15)
    diag = merge_all([Moments.of(x[:5], "diag"), Moments.of(x[5:], "diag")])
    np.testing.assert_allclose(diag.scatter, ((x - x.mean(0)) ** 2).sum(0), rtol=1e-11)
    with pytest.raises(ParameterError, match="cannot merge"):
        parts[0].merge(Moments.of(x[:3], "diag"))


@pytest.mark.parametrize("kind,make", CLOSED, ids=[k for k, _ in CLOSED])
def test_fit_from_batch_statistics_equals_fit(kind, make):
    from gaikan.distributed.fit import fit_batches

    X = structured_images(23, seed=0)
    a = make().fit(X)
    b = fit_batches(make(), [X[:7], X[7:15], X[15:]])
    _same_model(a, b)
    test = plant_defect(structured_images(6, seed=9))[0]
    np.testing.assert_allclose(b.anomaly_map(test), a.anomaly_map(test), rtol=1e-9, atol=1e-12)


def test_fit_files_serial_equals_fit_and_skips_bad_files(tmp_path):
    from PIL import Image

    from gaikan.distributed.fit import fit_files_serial

    X = structured_images(12, seed=3)
    for i, img in enumerate(X):
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "05_bad.png").write_bytes(b"not an image")
    files = [str(p) for p in find_images([str(tmp_path)])]
    res = fit_files_serial(gaikan.SOARTC(), files, size=(40, 40), batch_size=5)
    _same_model(gaikan.SOARTC().fit(X), res.detector)
    assert [p for p, _ in res.errors] == [str(tmp_path / "05_bad.png")]
    with pytest.raises(ParameterError, match="variants.* has no distributed fit"):
        fit_files_serial(gaikan.detectors.variants.VariantDetector(), files, size=(40, 40))


# -- on a real LocalCluster of processes -------------------------------------------------
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """23 good parts as PNG files and one broken file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("good")
    for i, img in enumerate(structured_images(23, seed=0)):
        Image.fromarray(img.astype(np.uint8)).save(root / f"{i:02d}.png")
    (root / "11_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return [str(p) for p in find_images([str(root)])]


@pytest.mark.parametrize("kind,make", CLOSED, ids=[k for k, _ in CLOSED])
def test_dask_fit_equals_the_single_process_fit(cluster, good_files, kind, make):
    from gaikan.distributed import fit_files_dask

    local = make().fit(load_images(good_files, (40, 40)).images)
    res = fit_files_dask(make(), good_files, cluster.scheduler_address, size=(40, 40), batch_size=5)
    _same_model(local, res.detector)
    assert [p for p, _ in res.errors] == [p for p in good_files if "broken" in p]
    assert res.paths == [p for p in good_files if "broken" not in p]
    test = plant_defect(structured_images(6, seed=9))[0]
    np.testing.assert_allclose(
        res.detector.anomaly_score(test), local.anomaly_score(test), rtol=1e-9
    )
    assert res.detector.predict(test).tolist() == local.predict(test).tolist()


def test_cli_fit_dask_writes_the_same_model(cluster, good_files, tmp_path):
    from click.testing import CliRunner

    from gaikan.cli import cli

    folder = os.path.dirname(good_files[0])
    r1 = CliRunner().invoke(cli, ["fit", folder, "-o", str(tmp_path / "a.gaikan"), "--size", "40"])
    r2 = CliRunner().invoke(
        cli,
        ["fit", folder, "-o", str(tmp_path / "b.gaikan"), "--size", "40",
         "--dask", cluster.scheduler_address],
    )  # fmt: skip
    assert r1.exit_code == 0, r1.output
    assert r2.exit_code == 0, r2.output
    assert "skipped:" in r2.output and "on tcp://" in r2.output
    a, b = gaikan.load(tmp_path / "a.gaikan"), gaikan.load(tmp_path / "b.gaikan")
    _same_model(a, b)


def test_kinds_without_a_distributed_fit_are_named(cluster, good_files):
    from gaikan.detectors.variants import VariantDetector
    from gaikan.distributed import fit_files_dask

    with pytest.raises(ParameterError, match=r"soartc, soart3map, rt, padim"):
        fit_files_dask(VariantDetector(), good_files, cluster.scheduler_address, size=(40, 40))


@pytest.mark.deep
@pytest.mark.slow
def test_padim_dask_fit_equals_the_single_process_fit(cluster, tmp_path):
    pytest.importorskip("torch")
    from PIL import Image

    from gaikan.deep import PaDiM
    from gaikan.distributed import fit_files_dask

    for i, img in enumerate(structured_images(12, size=64, seed=0)):
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    files = [str(p) for p in find_images([str(tmp_path)])]

    def make():
        return PaDiM(num_threads=1, n_features=24, runtime="eager")

    local = make().fit(load_images(files, (64, 64)).images)
    res = fit_files_dask(make(), files, cluster.scheduler_address, size=(64, 64), batch_size=5)
    det = res.detector
    np.testing.assert_array_equal(det.channels_, local.channels_)
    np.testing.assert_allclose(det.mean_, local.mean_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(det.train_scores_, local.train_scores_, rtol=1e-3)
    bad = plant_defect(structured_images(4, size=64, seed=3), box=10)[0]
    np.testing.assert_allclose(det.anomaly_score(bad), local.anomaly_score(bad), rtol=1e-3)


def _loo_tasks_not_done(dask_scheduler=None):
    return sum(
        1
        for ts in dask_scheduler.tasks.values()
        if str(ts.key).startswith("gaikan-fit-loo") and ts.state != "memory"
    )


def test_a_worker_killed_mid_fit_changes_nothing(good_files):
    """Kill a worker during the last round: its lost results are recomputed, the model unchanged."""
    import signal

    from gaikan.distributed import fit_files_dask

    local = gaikan.SOARTC().fit(load_images(good_files, (40, 40)).images)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        pids = client.run(os.getpid)
        killed: list[int] = []
        pending: list[int] = []

        def kill_once(_n):
            if not killed:
                # the worker holding the most kept features, while later batches still need them
                held = client.has_what()
                victim = max(pids, key=lambda a: len(held.get(a, ())))
                killed.append(pids[victim])
                # results the client has not fetched yet (or tasks not yet run) that die with it
                pending.append(
                    client.run_on_scheduler(_loo_tasks_not_done)
                    + sum(1 for k in held.get(victim, ()) if "-fit-loo-" in str(k))
                    - 1
                )
                os.kill(pids[victim], signal.SIGKILL)

        res = fit_files_dask(
            gaikan.SOARTC(), good_files, client, size=(40, 40), batch_size=1, progress=kill_once
        )
        after = client.run(os.getpid)
    assert killed and killed[0] not in after.values()
    assert pending[0] > 0  # the kill lost leave-one-out results the fit still needed
    _same_model(local, res.detector)


@pytest.mark.deep
@pytest.mark.slow
def test_patchcore_dask_fit_is_the_documented_approximation(cluster, tmp_path):
    """Per-partition coresets, then one of their union: a bank of the single-process size."""
    pytest.importorskip("torch")
    from PIL import Image

    from gaikan.deep import PatchCore
    from gaikan.distributed import fit_files_dask

    for i, img in enumerate(structured_images(12, size=64, seed=0)):
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    files = [str(p) for p in find_images([str(tmp_path)])]

    def make():
        return PatchCore(num_threads=1, runtime="eager", coreset_ratio=0.25)

    local = make().fit(load_images(files, (64, 64)).images)
    det = fit_files_dask(make(), files, cluster.scheduler_address, size=(64, 64), batch_size=4)
    det = det.detector
    assert det.bank_.dtype == local.bank_.dtype and det.bank_.shape[1] == local.bank_.shape[1]
    assert abs(len(det.bank_) - len(local.bank_)) <= 3  # ratio × patches, rounded per block
    assert len(det.train_scores_) == len(local.train_scores_)
    assert np.isfinite(det.threshold_) and det.threshold_ > 0
    good = structured_images(4, size=64, seed=8)
    bad = plant_defect(structured_images(4, size=64, seed=9), box=14, delta=90.0)[0]
    assert det.anomaly_score(bad).min() > det.anomaly_score(good).max()
