"""gaikan export: one ONNX graph per deep detector, scored torch-free like the torch path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnxruntime")

import gaikan
from gaikan.errors import ModelFileError, ParameterError

pytestmark = pytest.mark.deep

H = W = 64


def _texture(rng, n):
    """Good parts: a woven texture with small shifts, gain and noise (8-bit integers)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    out = np.empty((n, H, W))
    for i in range(n):
        dy, dx = rng.uniform(-1.5, 1.5, 2)
        t = np.sin((xx + dx) / 2.5) * np.sin((yy + dy) / 2.5)
        out[i] = 128 + rng.uniform(0.9, 1.1) * 50 * t + rng.normal(0, 6, (H, W))
    return np.clip(np.rint(out), 0, 255)


def _plant(rng, imgs):
    """Defects: a bright blot or a dark scratch at a random place."""
    out = imgs.copy()
    for i in range(out.shape[0]):
        y, x = rng.integers(8, H - 20, 2)
        if i % 2:
            out[i, y : y + 12, x : x + 12] = 235.0
        else:
            for t in range(16):
                out[i, y + t // 2 : y + t // 2 + 2, x + t] = 15.0
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    train = _texture(rng, 20)
    test = np.concatenate([_texture(rng, 8), _plant(rng, _texture(rng, 8))])
    return train, test


@pytest.fixture(scope="module")
def padim(data):
    from gaikan.deep import PaDiM

    torch.set_num_threads(1)
    return PaDiM(num_threads=1).fit(data[0])  # layers default (2, 3, 4)


@pytest.fixture(scope="module")
def padim_file(padim, tmp_path_factory):
    from gaikan.deep.export import export_detector

    path = tmp_path_factory.mktemp("export") / "padim.onnx.gaikan"
    export_detector(padim, num_threads=1).save(path)
    return path


def _map_error(ref_maps, maps, threshold):
    """Largest map difference on the normalised scale: map / max(threshold, its peak)."""
    n = len(ref_maps)
    scale = np.maximum(np.abs(ref_maps).reshape(n, -1).max(axis=1), threshold)
    return (np.abs(maps - ref_maps).reshape(n, -1).max(axis=1) / scale).max()


def _assert_equal(source, exported, images):
    a, b = source.detect(images), exported.detect(images)
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4, atol=0)
    assert _map_error(a.maps, b.maps, source.threshold_) <= 1e-3
    np.testing.assert_array_equal(b.is_defect, a.is_defect)
    return a


# -- equality with the torch path -------------------------------------------------------------
def test_padim_export_scores_like_torch(padim, padim_file, data):
    _, test = data
    exported = gaikan.load(padim_file)
    assert type(exported).__name__ == "OnnxDetector" and exported.kind == "onnx-detector"
    assert exported.threshold_ == padim.threshold_
    assert exported.image_shape_ == padim.image_shape_
    np.testing.assert_array_equal(exported.train_scores_, padim.train_scores_)
    assert exported.source_kind_ == "padim" and exported.source_params_["layers"] == [2, 3, 4]
    a = _assert_equal(padim, exported, test)
    # the comparison is not vacuous: the detector separates the planted defects
    assert a.scores[8:].min() > a.scores[:8].max() or a.is_defect[8:].sum() >= 6
    assert exported.export_info_["check"]["ok"] is True


@pytest.mark.parametrize(
    "params",
    [
        {"n_features": 24, "layers": (2, 3), "feature_stride": 8, "grid_sigma": 1.0},
        {"n_features": 24, "image_size": 48},  # resize inside the graph
    ],
    ids=["grid-blur", "resize"],
)
def test_padim_variants_export_equal(params, data, tmp_path):
    from gaikan.deep import PaDiM
    from gaikan.deep.export import export_detector

    train, test = data
    det = PaDiM(num_threads=1, **params).fit(train)
    export_detector(det).save(tmp_path / "m.gaikan")
    _assert_equal(det, gaikan.load(tmp_path / "m.gaikan"), test)


@pytest.mark.parametrize(
    "params",
    [{}, {"n_features": 24, "layers": (2, 3), "feature_stride": 8}, {"stages": ("soart3",)}],
    ids=["defaults", "fine-grid", "soart3-only"],
)
def test_soart_deep_export_equal(params, data, tmp_path):
    from gaikan.deep import SOARTDeep
    from gaikan.deep.export import export_detector

    train, test = data
    det = SOARTDeep(num_threads=1, **params).fit(train)
    export_detector(det, check_images=test).save(tmp_path / "sd.gaikan")
    exported = gaikan.load(tmp_path / "sd.gaikan")
    assert exported.source_kind_ == "soart-deep"
    _assert_equal(det, exported, test)


@pytest.mark.parametrize("search_dim", [0, 16])
def test_patchcore_export_equal(data, tmp_path, search_dim):
    from gaikan.deep import PatchCore
    from gaikan.deep.export import export_detector

    train, test = data
    det = PatchCore(
        num_threads=1,
        coreset_ratio=0.25,
        layers=(2, 3),
        feature_stride=8,
        search_dim=search_dim,
        search_candidates=4,
    ).fit(train)
    export_detector(det, check_images=test).save(tmp_path / "pc.gaikan")
    exported = gaikan.load(tmp_path / "pc.gaikan")
    assert exported.source_kind_ == "patchcore"
    _assert_equal(det, exported, test)


# -- the detector contract ---------------------------------------------------------------------
def test_exported_model_keeps_the_detector_contract(padim, padim_file, data):
    _, test = data
    det = gaikan.load(padim_file)
    x = test[:5]
    s = det.anomaly_score(x)
    grid = det.patch_scores(x)
    assert grid.shape == (5, *det.grid_shape_) == (5, 8, 8)
    np.testing.assert_allclose(s, grid.reshape(5, -1).max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(det.score_samples(x), -s)
    np.testing.assert_array_equal(det.predict(x), np.where(s > det.threshold_, -1, 1))
    maps = det.anomaly_map(x)
    assert maps.shape == (5, H, W)
    # the source's maps (its grid's map refined by pixel evidence), on the normalised scale
    ref = padim.anomaly_map(x)
    scale = np.maximum(det.threshold_, ref.reshape(5, -1).max(1))[:, None, None]
    np.testing.assert_allclose(maps / scale, ref / scale, atol=1e-3)
    res = det.detect(x)
    np.testing.assert_allclose(res.scores, s)
    with pytest.raises(ValueError, match="fitted on 64x64"):
        det.detect(np.zeros((1, 32, 32)))
    with pytest.raises(ParameterError, match="cannot be fitted"):
        det.fit(test)


def test_inspector_opens_an_exported_model(padim, padim_file, data):
    from gaikan.inspection import Inspector

    _, test = data
    a = Inspector(padim).judge(test)
    b = Inspector(gaikan.load(padim_file)).judge(test)
    assert [r.verdict for r in b] == [r.verdict for r in a]
    assert "defect" in {r.verdict for r in b}
    np.testing.assert_allclose([r.score for r in b], [r.score for r in a], rtol=1e-4)


def test_export_refuses_what_it_cannot_export(data):
    from gaikan.deep.export import export_detector

    with pytest.raises(ParameterError, match="padim, patchcore, soart-deep"):
        export_detector(gaikan.SOARTC(kernel=8, stride=4).fit(data[0]))
    from gaikan.deep import PaDiM

    with pytest.raises(ParameterError, match="not fitted"):
        export_detector(PaDiM())


def test_a_damaged_graph_is_a_model_file_error(padim_file, tmp_path):
    from gaikan.modelfile import read_model, write_model

    mf = read_model(padim_file)
    mf.blobs["model.onnx"] = b"not an onnx graph"
    write_model(tmp_path / "bad.gaikan", mf)  # valid checksums, broken graph
    with pytest.raises(ModelFileError, match="ONNX"):
        gaikan.load(tmp_path / "bad.gaikan")
    mf.blobs = {}
    write_model(tmp_path / "none.gaikan", mf)
    with pytest.raises(ModelFileError, match="model.onnx"):
        gaikan.load(tmp_path / "none.gaikan")


def test_cli_export(padim, data, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from gaikan.cli.export import export

    padim.save(tmp_path / "padim.gaikan")
    check = tmp_path / "check"
    check.mkdir()
    for i, img in enumerate(data[1][::4]):
        Image.fromarray(img.astype(np.uint8)).save(check / f"{i}.png")
    out = tmp_path / "padim.onnx.gaikan"
    r = CliRunner().invoke(
        export, [str(tmp_path / "padim.gaikan"), "-o", str(out), "--check", str(check)]
    )
    assert r.exit_code == 0, r.output
    assert "checked on 4 images" in r.output
    det = gaikan.load(out)
    assert det.kind == "onnx-detector" and det.export_info_["check"]["n"] == 4
    r = CliRunner().invoke(export, [str(out), "-o", str(tmp_path / "again.gaikan")])
    assert r.exit_code == 4 and "padim, patchcore, soart-deep" in r.output


# -- without torch -----------------------------------------------------------------------------
_BLOCK = "import sys\nfor m in ('torch', 'torchvision', 'timm'):\n    sys.modules[m] = None\n"


def run_without_torch(body: str) -> Any:
    """Run ``body`` (indented Python, dedented here) in a fresh interpreter where torch,
    torchvision and timm cannot be imported; the JSON its last printed line holds."""
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(body)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_torch_free_scoring_and_inspect(padim, padim_file, data, tmp_path):
    """A subprocess where torch cannot be imported scores and inspects the exported file."""
    from PIL import Image

    from gaikan.io import find_images, load_images

    _, test = data
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, img in enumerate(test):
        Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:02d}.png")
    files = find_images([str(folder)])
    images = load_images(files, (H, W)).images
    ref = padim.detect(images)
    np.save(tmp_path / "images.npy", images)
    status = run_without_torch(
        f"""
        import json
        import numpy as np
        import gaikan, gaikan.runtime  # gaikan.runtime: temporary registration of the kind
        det = gaikan.load({str(padim_file)!r})
        res = det.detect(np.load({str(tmp_path / "images.npy")!r}))
        np.save({str(tmp_path / "scores.npy")!r}, res.scores)
        np.save({str(tmp_path / "maps.npy")!r}, res.maps)
        from gaikan.cli import main
        try:
            main(["inspect", {str(padim_file)!r}, {str(folder)!r}, "-o", {str(tmp_path / "out")!r}])
        except SystemExit as e:
            code = e.code
        print(json.dumps({{"code": code, "torch": sorted(m for m in sys.modules
              if m.split(".")[0] in ("torch", "timm") and sys.modules[m] is not None)}}))
        """
    )
    assert status == {"code": 0, "torch": []}
    scores = np.load(tmp_path / "scores.npy")
    np.testing.assert_allclose(scores, ref.scores, rtol=1e-4)
    assert _map_error(ref.maps, np.load(tmp_path / "maps.npy"), padim.threshold_) <= 1e-3
    with open(tmp_path / "out" / "results.csv", newline="") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert len(rows) == len(files)
    for f, s, bad in zip(files, ref.scores, ref.is_defect):
        row = rows[f.name]
        assert row["verdict"] == ("defect" if bad else "ok")
        assert float(row["score"]) == pytest.approx(s, rel=1e-4)
    assert (tmp_path / "out" / "report.html").is_file()
