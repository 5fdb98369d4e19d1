"""Explanation maps (Grad-CAM, LayerCAM, EigenCAM, attention rollout) and
the evaluation maths (pointing score, metrics)."""

import numpy as np
import pytest

from gaikan.deep.evaluate import (
    classification_metrics,
    confusion_matrix,
    pointing_hits,
    pointing_score,
    top_losses,
)

# --------------------------------------------------------------------------- evaluation maths (numpy)


def test_pointing_score_golden():
    maps = np.zeros((4, 6, 6))
    masks = np.zeros((4, 6, 6), bool)
    maps[0, 1, 1] = 1
    masks[0, 1, 1] = True  # hit
    maps[1, 4, 4] = 1
    masks[1, 0:2, 0:2] = True  # miss
    maps[2, 2, 3] = 1
    masks[2, 2, 4] = True  # miss, but within 1 px
    maps[3, 0, 0] = 1  # no mask: excluded from the score
    assert pointing_hits(maps[:3], masks[:3]).tolist() == [True, False, False]
    assert pointing_hits(maps[:3], masks[:3], tolerance=1).tolist() == [True, False, True]
    assert pointing_score(maps, masks) == pytest.approx(1 / 3)
    assert pointing_score(maps, masks, tolerance=1) == pytest.approx(2 / 3)
    assert np.isnan(pointing_score(maps[3:], masks[3:]))
    with pytest.raises(ValueError):
        pointing_hits(maps, masks[:, :5])


def test_pointing_first_maximum_and_nan():
    maps = np.ones((1, 3, 3))  # ties → first maximum (0, 0)
    masks = np.zeros((1, 3, 3), bool)
    masks[0, 0, 0] = True
    assert pointing_hits(maps, masks).tolist() == [True]
    maps[0, 0, 0] = np.nan  # NaN never wins
    assert pointing_hits(maps, masks).tolist() == [False]


def test_classification_metrics_golden():
    y = ["a", "a", "a", "b", "b", "c"]
    p = ["a", "a", "b", "b", "c", "c"]
    cm = confusion_matrix(y, p, ["a", "b", "c"])
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(4 / 6)
    pa, pb, pc = m["per_class"]
    assert (pa["precision"], pa["recall"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    assert (pb["precision"], pb["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (pc["precision"], pc["recall"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert pa["f1"] == pytest.approx(0.8) and pc["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert [r["support"] for r in m["per_class"]] == [3, 2, 1]


def test_top_losses_order():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    idx, loss = top_losses(proba, np.array([0, 0, 1]), k=2)
    assert idx.tolist() == [1, 2]
    np.testing.assert_allclose(loss, [-np.log(0.2), -np.log(0.4)])


# --------------------------------------------------------------------------- torch maps
torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from gaikan.deep import cam


class BrightSpotNet(torch.nn.Module):  # type: ignore[name-defined]  # torch from importorskip
    """Fixed CNN: class 1 = 'has a bright spot' (ReLU of brightness − 0.5)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1, 1] = torch.tensor([1.0, 1.0, -1.0, 0.5])
            self.conv.bias.copy_(torch.tensor([-0.5, -0.6, 0.2, -0.4]))
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward_head(self, f):
        return self.fc(f.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def spot_batch(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, (n, 1, size, size))
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        r, c = rng.integers(1, size - 5, 2)
        x[i, 0, r : r + 4, c : c + 4] = 1.0
        masks[i, r : r + 4, c : c + 4] = True
    return torch.tensor(x, dtype=torch.float32), masks


@pytest.mark.deep
@pytest.mark.parametrize("method", ["gradcam", "layercam", "eigencam"])
def test_cam_peaks_inside_planted_spot(method):
    net = BrightSpotNet().eval()
    x, masks = spot_batch()
    maps = cam.explain_model(net, x, method=method, target=[1] * len(x)).numpy()
    assert maps.shape == (6, 24, 24)
    assert maps.min() >= 0 and np.allclose(maps.reshape(6, -1).max(1), 1.0)
    assert pointing_hits(maps, masks).all()


@pytest.mark.deep
def test_gradcam_default_target_is_prediction():
    net = BrightSpotNet().eval()
    x, _ = spot_batch(2)
    a = cam.grad_cam(net, x)
    b = cam.grad_cam(net, x, target=net(x).argmax(1))
    assert torch.equal(a, b)


@pytest.mark.deep
def test_gradcam_on_named_layer_matches_features():
    net = BrightSpotNet().eval()
    x, _ = spot_batch(3)

    class Wrapped(torch.nn.Module):  # no forward_features: hooks on a named module
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.act = torch.nn.ReLU()

        def forward(self, x):
            return self.inner.forward_head(self.act(self.inner.conv(x)))

    w = Wrapped(net).eval()
    a = cam.grad_cam(net, x, target=[1, 1, 1])
    b = cam.grad_cam(w, x, target=[1, 1, 1], layer="act")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no module"):
        cam.grad_cam(w, x, layer="nope")


@pytest.mark.deep
def test_normalize_maps_flat_and_range():
    m = torch.stack([torch.zeros(4, 4), torch.arange(16.0).reshape(4, 4) * 3 + 2])
    out = cam.normalize_maps(m)
    assert torch.equal(out[0], torch.zeros(4, 4))
    assert out[1].min() == 0 and out[1].max() == 1


@pytest.mark.deep
def test_rollout_golden_and_stochastic():
    n, N = 2, 5
    uni = torch.full((n, 3, N, N), 1.0 / N)
    r1 = cam.rollout([uni])
    expect = 0.5 * torch.eye(N) + 0.5 / N
    torch.testing.assert_close(r1, expect.expand(n, N, N))
    g = torch.Generator().manual_seed(0)
    attns = [torch.softmax(torch.randn(n, 2, N, N, generator=g), -1) for _ in range(3)]
    R = cam.rollout(attns)
    torch.testing.assert_close(R.sum(-1), torch.ones(n, N))
    # explicit product, last layer on the left
    A = [0.5 * torch.eye(N) + 0.5 * a.mean(1) for a in attns]
    torch.testing.assert_close(R, A[2] @ A[1] @ A[0])
    Rd = cam.rollout(attns, discard_ratio=0.5)
    torch.testing.assert_close(Rd.sum(-1), torch.ones(n, N))


@pytest.mark.deep
def test_attention_rollout_on_timm_vit_unfuses_and_restores():
    import timm

    vit = timm.create_model(
        "test_vit", pretrained=False, num_classes=3, img_size=32, patch_size=8
    ).eval()
    mods = cam._attention_modules(vit)
    for m in mods:
        m.fused_attn = True  # the fast path that hides the matrices
    x = torch.randn(2, 3, 32, 32)
    attns = cam.attention_matrices(vit, x)
    assert len(attns) == len(vit.blocks)
    N = 1 + 16 + (vit.num_prefix_tokens - 1)
    assert attns[0].shape[-2:] == (N, N)
    torch.testing.assert_close(attns[0].sum(-1), torch.ones_like(attns[0].sum(-1)))
    maps = cam.attention_rollout(vit, x)
    assert maps.shape == (2, 32, 32)
    assert float(maps.min()) >= 0 and torch.allclose(maps.flatten(1).max(1).values, torch.ones(2))
    assert all(m.fused_attn for m in mods)  # restored
    # Grad-CAM also works on the token grid
    assert cam.grad_cam(vit, x).shape == (2, 32, 32)


@pytest.mark.deep
def test_trained_classifier_points_at_defects():
    """End to end: LayerCAM of a fine-tuned CNN peaks inside the planted square."""
    from gaikan.deep.classify import Classifier
    from gaikan.deep.evaluate import evaluate

    def make(n, seed):
        rng = np.random.default_rng(seed)
        X = rng.normal(110, 10, (n, 48, 48))
        y = np.array(["good", "defect"] * (n // 2))
        masks = np.zeros(X.shape, bool)
        for i in np.flatnonzero(y == "defect"):
            r, c = rng.integers(2, 38, 2)
            X[i, r : r + 8, c : c + 8] += 100
            masks[i, r : r + 8, c : c + 8] = True
        return np.clip(X, 0, 255), y, masks

    X, y, _ = make(160, 0)
    Xt, yt, mt = make(40, 1)
    clf = Classifier(
        "test_efficientnet",
        pretrained=False,
        image_size=64,
        batch_size=16,
        num_threads=1,
        brightness=0,
        contrast=0,
    )
    # lr_mult=100 (the pretrained default) although the toy net starts from scratch:
    # the calibration this test was written with
    clf.fine_tune(X, y, epochs=6, base_lr=1e-2, lr_mult=100)
    ev = evaluate(clf, Xt, yt, masks=mt, method="layercam", layer="blocks.0")
    assert ev.accuracy >= 0.9
    assert ev.maps.shape == (20, 48, 48)
    # map maxima inside the 8×8 square (of 48×48: chance ≈ 3 %); the last
    # feature map of this toy net is 2×2, so the CAMs use an early block
    assert ev.pointing >= 0.9
    d = yt == "defect"
    grad = clf.explain(Xt[d], method="gradcam", layer="blocks.0", target="defect")
    assert pointing_score(grad, mt[d]) >= 0.7
