"""Experimental int8 export (static post-training quantisation of the backbone's convolutions)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import gaikan
from gaikan.errors import ParameterError

pytestmark = pytest.mark.deep


@pytest.fixture(scope="module")
def fitted():
    from gaikan.deep import PaDiM
    from test_export import _plant, _texture

    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    train = _texture(rng, 20)
    test = np.concatenate([_texture(rng, 6), _plant(rng, _texture(rng, 6))])
    return PaDiM(num_threads=1, n_features=24).fit(train), train, test


def test_int8_export_quantises_the_convolutions_and_records_its_error(fitted, tmp_path):
    from gaikan.deep.export import export_detector
    from gaikan.modelfile import read_model

    det, train, test = fitted
    out = export_detector(det, check_images=test, int8_calibration=train[:8])
    out.save(tmp_path / "q.gaikan")
    graph = onnx.load_from_string(read_model(tmp_path / "q.gaikan").blobs["model.onnx"])
    ops = [n.op_type for n in graph.graph.node]
    # every convolution reads a dequantised int8 weight; the head stays float
    n_conv = ops.count("Conv")
    assert n_conv > 10 and ops.count("DequantizeLinear") >= n_conv
    inits = {i.name: i for i in graph.graph.initializer}
    assert any(i.data_type == onnx.TensorProto.INT8 for i in inits.values())
    info = gaikan.load(tmp_path / "q.gaikan").export_info_
    assert info["int8"]["calibration_images"] == 8
    assert info["check"]["ok"]  # the float graph was verified first
    q = info["int8"]["check"]
    assert q["n"] == len(test) and q["score_rel"] > 0  # int8 differs, and says by how much
    # still a working detector: the planted defects score above the good parts on average
    s = gaikan.load(tmp_path / "q.gaikan").anomaly_score(test)
    assert s[6:].mean() > s[:6].mean()


def test_int8_needs_good_images_at_the_model_size(fitted):
    from gaikan.deep.export import export_detector

    det, train, _ = fitted
    with pytest.raises(ParameterError, match="int8 calibration"):
        export_detector(det, int8_calibration=train[:4, :32, :32])


def test_cli_int8_experimental(fitted, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from gaikan.cli.export import export

    det, train, _ = fitted
    det.save(tmp_path / "padim.gaikan")
    good = tmp_path / "good"
    good.mkdir()
    for i, img in enumerate(train[:6]):
        Image.fromarray(img.astype(np.uint8)).save(good / f"{i}.png")
    out = tmp_path / "q.gaikan"
    args = [str(tmp_path / "padim.gaikan"), "-o", str(out), "--int8-experimental", str(good)]
    r = CliRunner().invoke(export, args)
    assert r.exit_code == 0, r.output
    assert "int8 (experimental): calibrated on 6 images" in r.output
    assert gaikan.load(out).export_info_["int8"]["calibration_images"] == 6
