"""Offline backbones and the feature extractor (gaikan.deep.backbones / features)."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from gaikan.deep.backbones import (
    BACKBONES,
    backbone_config,
    convert_efficientnet_pytorch,
    create_backbone,
    is_offline,
    load_state_dict_file,
    packaged_weights_path,
)
from gaikan.errors import ParameterError

pytestmark = pytest.mark.deep

LITES = sorted(BACKBONES)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", LITES)
def test_packaged_weights_rename_with_zero_missing_and_unexpected(name):
    pytest.importorskip(BACKBONES[name].package)
    model = timm.create_model(BACKBONES[name].timm_name, pretrained=False)
    raw = load_state_dict_file(packaged_weights_path(name))
    assert any(k.startswith("_blocks.") for k in raw)  # efficientnet_pytorch naming
    sd = convert_efficientnet_pytorch(raw, [len(s) for s in model.blocks])
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    own = model.state_dict()
    assert all(own[k].shape == v.shape for k, v in sd.items())
    # the TF-ported architecture: "same" padding and BN eps 1e-3
    assert model.bn1.eps == pytest.approx(1e-3)
    assert type(model.blocks[1][0].conv_dw).__name__ == "Conv2dSame"


def test_convert_rejects_unknown_keys():
    with pytest.raises(ValueError, match="no timm name"):
        convert_efficientnet_pytorch({"_blocks.0._mystery.weight": torch.zeros(1)}, [1])


@pytest.mark.parametrize("name", LITES)
def test_top5_on_a_cat_photo_contains_a_cat_class(name):
    pytest.importorskip(BACKBONES[name].package)
    skdata = pytest.importorskip("skimage.data")
    img = skdata.chelsea()  # a tabby cat
    cfg = backbone_config(name)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    s = cfg["input_size"]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", antialias=True)
    x = (x - 0.5) / 0.5
    net = create_backbone(name)
    with torch.inference_mode():
        top5 = net(x)[0].topk(5).indices.tolist()
    # ImageNet 281–285: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert set(top5) & set(range(281, 286)), top5
    assert 281 <= top5[0] <= 285


def test_features_only_drops_unused_blocks_and_keeps_weights():
    full = create_backbone("efficientnet_lite0")
    feat = create_backbone("efficientnet_lite0", features_only=True, out_indices=(1, 2))
    assert feat.feature_info.channels() == [24, 40]
    assert len(feat.blocks) == 3  # stages after stride 8 are not computed
    torch.testing.assert_close(feat.blocks[2][0].conv_pw.weight, full.blocks[2][0].conv_pw.weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        outs = feat(x)
    assert [tuple(o.shape) for o in outs] == [(1, 24, 16, 16), (1, 40, 8, 8)]


def test_new_head_and_local_weights_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    net = create_backbone("efficientnet_lite0", num_classes=3)
    assert net.classifier.out_features == 3
    ref = create_backbone("efficientnet_lite0")
    torch.testing.assert_close(net.conv_head.weight, ref.conv_head.weight)
    # a local timm-named safetensors file takes the place of the packaged one
    path = tmp_path / "lite0.safetensors"
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    sd["conv_stem.weight"] = sd["conv_stem.weight"] * 2
    safetensors.save_file(sd, str(path))
    local = create_backbone("efficientnet_lite0", weights_file=path)
    torch.testing.assert_close(local.conv_stem.weight, ref.conv_stem.weight * 2)


def test_weights_that_do_not_fit_are_an_error(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    sd = {k: v.contiguous() for k, v in create_backbone("efficientnet_lite0").state_dict().items()}
    del sd["blocks.3.0.conv_dw.weight"]
    path = tmp_path / "broken.safetensors"
    safetensors.save_file(sd, str(path))
    with pytest.raises(RuntimeError, match="missing"):
        create_backbone("efficientnet_lite0", weights_file=path)


def test_offline_allow_list():
    assert all(is_offline(n) for n in BACKBONES)
    assert is_offline("efficientnet-lite0") and is_offline("tf_efficientnet_lite2")
    assert not is_offline("resnet18") and not is_offline("hf-hub:timm/resnet18.a1_in1k")


@pytest.mark.parametrize(
    "name, kw",
    [
        ("resnet18", {}),  # timm would download it
        ("hf-hub:timm/resnet18.a1_in1k", {"pretrained": False}),  # timm fetches the config
        ("local-dir:/etc", {"pretrained": False}),
    ],
)
def test_create_backbone_never_downloads(name, kw, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ParameterError, match="never downloads"):
        create_backbone(name, **kw)


def test_importing_gaikan_deep_is_lazy():
    code = (
        "import sys, gaikan, gaikan.deep; "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'eager import'; "
        "gaikan.deep.backbone_config; assert 'torch' not in sys.modules; "
        "assert gaikan.deep.create_backbone is not None; print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


# -- feature extractor -----------------------------------------------------------
@pytest.fixture(scope="module")
def grey_batch():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:80]
    base = 120 + 60 * np.sin(xx / 4.0) * np.cos(yy / 7.0)
    return np.clip(base[None] + rng.normal(0, 8, (5, 72, 80)), 0, 255)


def test_runtimes_agree_with_eager(grey_batch):
    from gaikan.deep.features import FeatureExtractor

    ref = FeatureExtractor(layers=(1, 2, 3), runtime="eager", num_threads=1, batch_size=2)(
        grey_batch
    )
    assert [f.shape for f in ref] == [(5, 24, 18, 20), (5, 40, 9, 10), (5, 112, 5, 5)]
    for runtime in ("channels_last", "onnx", "auto"):
        if runtime == "onnx":
            pytest.importorskip("onnxruntime")
        fe = FeatureExtractor(layers=(1, 2, 3), runtime=runtime, num_threads=1, batch_size=4)
        got = fe(grey_batch)
        for a, b in zip(got, ref):
            scale = np.abs(b).max()
            assert np.abs(a - b).max() <= 1e-4 * scale, (
                runtime,
                np.abs(a - b).max(),
                scale,
            )


def test_auto_runtime_is_the_measured_fastest_on_cpu():
    pytest.importorskip("onnxruntime")
    from gaikan.deep.features import FeatureExtractor

    assert FeatureExtractor(layers=(1,), runtime="auto").runtime == "onnx"


def test_grey_input_equals_three_identical_channels(grey_batch):
    from gaikan.deep.features import FeatureExtractor

    fe = FeatureExtractor(layers=(1, 2), runtime="eager", num_threads=1, image_size=64)
    got = fe(grey_batch[:2])
    net = create_backbone("efficientnet_lite0", features_only=True, out_indices=(1, 2))
    x = torch.as_tensor(grey_batch[:2], dtype=torch.float32)[:, None]
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
    x = ((x / 255.0 - 0.5) / 0.5).expand(-1, 3, -1, -1)
    with torch.inference_mode():
        ref = net(x)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4 * float(b.abs().max()))


def test_extractor_restores_the_thread_count(grey_batch):
    from gaikan.deep.features import FeatureExtractor

    torch.set_num_threads(1)
    fe = FeatureExtractor(layers=(1,), runtime="eager", num_threads=2)
    fe(grey_batch[:1])
    assert torch.get_num_threads() == 1
