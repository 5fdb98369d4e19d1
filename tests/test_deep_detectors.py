"""PaDiM, PatchCore and SOARTDeep: maths, model files, accuracy (the contract
over every registered kind is tests/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

import gaikan
from gaikan.errors import ParameterError
from gaikan.metrics import roc_auc

pytestmark = pytest.mark.deep

H = W = 64


def _texture(rng, n):
    """Good parts: a woven texture with small random shifts, noise and gain."""
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    out = np.empty((n, H, W))
    for i in range(n):
        dy, dx = rng.uniform(-1.5, 1.5, 2)
        g = rng.uniform(0.9, 1.1)
        t = np.sin((xx + dx) / 2.5) * np.sin((yy + dy) / 2.5)
        out[i] = 128 + g * 50 * t + rng.normal(0, 6, (H, W))
    return np.clip(out, 0, 255)


def _plant(rng, imgs):
    """Defects: a dark scratch or a bright blot at a random place."""
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
    rng = np.random.default_rng(42)
    train = _texture(rng, 24)
    good = _texture(rng, 10)
    bad = _plant(rng, _texture(rng, 10))
    test = np.concatenate([good, bad])
    labels = np.r_[np.zeros(10), np.ones(10)]
    return train, test, labels


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _padim(**kw):
    from gaikan.deep import PaDiM

    kw.setdefault("n_features", 24)
    kw.setdefault("layers", (2, 3))  # stride 8 grid: fine enough for 64 px test images
    kw.setdefault("feature_stride", 8)
    return PaDiM(num_threads=1, **kw)


def _patchcore(**kw):
    from gaikan.deep import PatchCore

    kw.setdefault("coreset_ratio", 0.25)
    kw.setdefault("layers", (2, 3))
    kw.setdefault("feature_stride", 8)
    return PatchCore(num_threads=1, **kw)


def _soart_deep(**kw):
    from gaikan.deep import SOARTDeep

    kw.setdefault("n_features", 24)
    kw.setdefault("layers", (2, 3))
    kw.setdefault("feature_stride", 8)
    return SOARTDeep(num_threads=1, **kw)


FACTORIES = {"padim": _padim, "patchcore": _patchcore, "soart-deep": _soart_deep}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def fitted(request, data):
    train, _, _ = data
    torch.set_num_threads(1)
    return request.param, FACTORIES[request.param]().fit(train)


# -- behaviour (the contract itself is tests/test_contract.py) ------------------------
def test_wrong_image_size_is_a_clear_error(fitted):
    _, det = fitted
    with pytest.raises(ParameterError, match="fitted on"):
        det.anomaly_score(np.zeros((1, 32, 32)))


def test_planted_defects_auroc_floor(fitted, data):
    kind, det = fitted
    _, test, labels = data
    auc = roc_auc(labels, det.anomaly_score(test))
    assert auc >= 0.9, (kind, auc)


def test_maps_point_at_the_defect(fitted, data):
    _, det = fitted
    rng = np.random.default_rng(7)
    img = _texture(rng, 1)
    img[0, 40:52, 12:24] = 235.0
    amap = det.anomaly_map(img)[0]
    inside = amap[40:52, 12:24].mean()
    far = amap[:24, 36:].mean()
    assert inside > 2 * far


def test_save_load_round_trip_gives_identical_scores(fitted, data, tmp_path):
    kind, det = fitted
    _, test, _ = data
    path = tmp_path / f"{kind}.gaikan"
    det.save(path)
    back = gaikan.load(path)
    assert type(back) is type(det)
    assert back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.anomaly_score(test[:4]), det.anomaly_score(test[:4]))
    np.testing.assert_array_equal(back.anomaly_map(test[:2]), det.anomaly_map(test[:2]))


def test_fit_is_seeded(fitted, data):
    kind, det = fitted
    train, test, _ = data
    again = FACTORIES[kind]().fit(train)
    np.testing.assert_array_equal(again.anomaly_score(test[:4]), det.anomaly_score(test[:4]))
    assert again.threshold_ == det.threshold_


# -- PaDiM is the MT method ------------------------------------------------------------
def _padim_embedding(det, X):
    from gaikan.deep.features import embed

    parts = [
        embed(o, det.grid_shape_)[:, det.channels_].numpy()
        for o in det._extractor().iter_batches(X)
    ]
    e = np.concatenate(parts).astype(np.float64)
    n, m = e.shape[:2]
    return e.reshape(n, m, -1).transpose(0, 2, 1)  # (n, P, m)


def test_padim_equals_core_mt_and_its_closed_form_loo(data):
    from gaikan.deep.padim import loo_from_insample
    from gaikan.taguchi import fit_gaussians, loo_mahalanobis, mahalanobis

    train, test, _ = data
    det = _padim(n_features=8, grid_sigma=0, reg_rel=1e-6, reg_abs=1e-12).fit(train)
    f_train = _padim_embedding(det, train)
    mean, whiten = fit_gaussians(f_train, 1e-6, 1e-12)
    f_test = _padim_embedding(det, test[:4])
    ref = mahalanobis(f_test, mean, whiten).reshape(4, *det.grid_shape_)
    np.testing.assert_allclose(det.patch_scores(test[:4]), ref, rtol=2e-3, atol=1e-3)
    # threshold: closed-form leave-one-out equals the core's explicit refits
    insample = mahalanobis(f_train, mean, whiten)
    n, _, m = f_train.shape
    loo_ref = loo_mahalanobis(f_train, reg_rel=1e-6, reg_abs=1e-12)
    # exact up to the ridge, held at its full-data value in the downdate
    np.testing.assert_allclose(loo_from_insample(insample, n, m), loo_ref, rtol=2e-4)
    # training features are kept as float16 during fit: ~1e-3 relative
    np.testing.assert_allclose(det.train_scores_, loo_ref.max(axis=1), rtol=2e-2)


def test_padim_channel_selection_follows_random_state():
    a = _padim(random_state=0)
    b = _padim(random_state=1)
    fe_total = 24 + 40 + 112
    ca, cb = a._select_channels(fe_total, 24), b._select_channels(fe_total, 24)
    assert len(ca) == 24 and len(set(ca)) == 24
    assert not np.array_equal(ca, cb)
    np.testing.assert_array_equal(ca, _padim(random_state=0)._select_channels(fe_total, 24))
    np.testing.assert_array_equal(a._select_channels(fe_total, None), np.arange(fe_total))


# -- PatchCore ----------------------------------------------------------------------------
@pytest.mark.parametrize("block", [4096, 256])
def test_greedy_coreset_keeps_rare_patches_and_is_seeded(block):
    from gaikan.deep.coreset import greedy_coreset

    rng = np.random.default_rng(3)
    common = rng.normal(0, 1, (2000, 32))
    rare = rng.normal(0, 1, (5, 32)) + 40.0 * np.eye(32)[:5]  # five far-away patches
    x = torch.from_numpy(np.concatenate([common, rare]).astype(np.float32))
    keep = greedy_coreset(x, 0.05, projection_dim=16, block=block, random_state=0)
    assert len(np.unique(keep)) == len(keep)
    assert 0.05 * len(x) <= len(keep) <= 0.05 * len(x) + 2 * (len(x) // block + 1)
    assert set(range(2000, 2005)) <= set(keep.tolist())
    np.testing.assert_array_equal(
        keep, greedy_coreset(x, 0.05, projection_dim=16, block=block, random_state=0)
    )
    assert not np.array_equal(
        keep, greedy_coreset(x, 0.05, projection_dim=16, block=block, random_state=1)
    )

    # it covers the data better than a random subset of the same size
    def radius(idx):
        return torch.cdist(x, x[torch.from_numpy(np.asarray(idx))]).min(dim=1).values.max().item()

    rand = rng.choice(len(x), size=len(keep), replace=False)
    assert radius(keep) < radius(rand)


def test_patchcore_scores_are_nearest_bank_distances(data):
    train, test, _ = data
    det = _patchcore(n_neighbors=0, coreset_ratio=1.0, bank_dtype="float32").fit(train[:8])
    assert det.bank_.shape[0] == 8 * int(np.prod(det.grid_shape_))
    feats = np.concatenate(
        [
            e.permute(0, 2, 3, 1).reshape(e.shape[0], -1, e.shape[1]).numpy()
            for e in det._iter_embeddings(test[:2])
        ]
    )
    ref = (
        torch.cdist(torch.from_numpy(feats), torch.from_numpy(det.bank_)).min(dim=2).values.numpy()
    )
    np.testing.assert_allclose(det.patch_scores(test[:2]).reshape(2, -1), ref, rtol=1e-3, atol=1e-3)
    # the leave-one-out threshold scores exclude the image's own bank entries
    assert (det.train_scores_ > 0).all()


def test_patchcore_two_step_search(data, tmp_path):
    """search_dim: candidates from the bank's leading principal directions, then exact
    distances — checked against numpy (its own SVD, its own candidate choice); with every
    bank entry a candidate it is the exact search; a saved and loaded model scores the same
    (the directions are derived from the bank, not stored)."""
    train, test, _ = data
    kw = {"n_neighbors": 0, "coreset_ratio": 1.0, "bank_dtype": "float32"}
    full = _patchcore(**kw).fit(train[:8])
    exact = full.patch_scores(test[:2]).reshape(2, -1)
    K = full.bank_.shape[0]
    p, m = 8, 4
    every = _patchcore(**kw, search_dim=p, search_candidates=K).fit(train[:8])
    np.testing.assert_allclose(every.patch_scores(test[:2]).reshape(2, -1), exact, rtol=1e-4)
    det = _patchcore(**kw, search_dim=p, search_candidates=m).fit(train[:8])
    np.testing.assert_array_equal(det.bank_, full.bank_)  # the bank itself is unchanged
    bank = full.bank_.astype(np.float64)
    mu = bank.mean(0)
    _, _, vt = np.linalg.svd(bank - mu, full_matrices=False)
    feats = np.concatenate(
        [
            e.permute(0, 2, 3, 1).reshape(e.shape[0], -1, e.shape[1]).numpy()
            for e in det._iter_embeddings(test[:2])
        ]
    ).astype(np.float64)
    q, b = (feats - mu) @ vt[:p].T, (bank - mu) @ vt[:p].T  # signs do not change distances
    dp = ((q[:, :, None, :] - b[None, None]) ** 2).sum(-1)
    cand = np.argsort(dp, axis=-1)[..., :m]
    ref = np.sqrt(((bank[cand] - feats[:, :, None, :]) ** 2).sum(-1).min(-1))
    got = det.patch_scores(test[:2]).reshape(2, -1)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
    assert (got >= exact - 1e-3).all()  # a true distance to some entry: never nearer
    assert not np.allclose(got, exact)  # 4 candidates of 8 directions do miss some
    det.save(tmp_path / "pc.gaikan")
    back = gaikan.load(tmp_path / "pc.gaikan")
    assert (back.search_dim, back.search_candidates) == (p, m)
    np.testing.assert_array_equal(back.anomaly_score(test[:3]), det.anomaly_score(test[:3]))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 12),
    width=st.integers(1, 2600),
    levels=st.sampled_from([None, 3]),  # None: distinct values; 3: many ties
    seed=st.integers(0, 2**16),
)
def test_smallest_equals_topk(k, width, levels, seed):
    """The two-pass selection of the search gives topk's values (ascending) at
    distinct columns whose entries are those values, partial last group included."""
    from gaikan.deep.nearest import smallest

    g = torch.Generator().manual_seed(seed)
    d = torch.randn(7, width, generator=g)
    if levels:
        d = torch.randint(0, levels, (7, width), generator=g).float()
    k = min(k, width)
    v, i = smallest(d, k)
    ref, _ = torch.topk(d, k, dim=1, largest=False)
    assert torch.equal(v, ref)
    assert torch.equal(torch.gather(d, 1, i), v)
    assert all(len(set(row.tolist())) == k for row in i)


def test_patchcore_files_from_before_the_two_step_search_keep_the_exact_one(data, tmp_path):
    from gaikan.modelfile import write_model

    train, test, _ = data
    det = _patchcore(search_dim=0).fit(train[:8])
    mf = det.to_modelfile()
    mf.params.pop("search_dim")
    mf.params.pop("search_candidates")
    write_model(tmp_path / "old.gaikan", mf)
    old = gaikan.load(tmp_path / "old.gaikan")
    assert old.search_dim == 0 and _patchcore().search_dim == 48
    np.testing.assert_array_equal(old.anomaly_score(test[:3]), det.anomaly_score(test[:3]))


def test_patchcore_reweighting_only_lowers_scores(data):
    train, test, _ = data
    det = _patchcore().fit(train)
    plain = _patchcore(n_neighbors=0)
    plain.__dict__.update(
        {k: v for k, v in det.__dict__.items() if k.endswith("_") or k.startswith("_")}
    )
    w = det.anomaly_score(test[:6]) / plain.anomaly_score(test[:6])
    assert ((w > 0) & (w <= 1)).all()
    assert (w < 1).any()


# -- CLI ------------------------------------------------------------------------------------
def test_cli_fit_and_inspect_with_a_deep_detector(data, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from gaikan.cli import cli

    train, test, _ = data
    good = tmp_path / "good"
    good.mkdir()
    for i, img in enumerate(train[:8]):
        Image.fromarray(img.astype(np.uint8)).save(good / f"g{i}.png")
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, img in enumerate(test[8:12]):
        Image.fromarray(img.astype(np.uint8)).save(parts / f"p{i}.png")
    model = tmp_path / "m.gaikan"
    runner = CliRunner()
    args = ["fit", str(good), "-o", str(model), "--detector", "padim"]
    args += ["--backbone", "efficientnet_lite0", "--size", "64", "-p", "layers=[2,3]"]
    args += ["-p", "feature_stride=8", "-p", "n_features=16", "-p", "num_threads=1"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    det = gaikan.load(model)
    assert det.kind == "padim" and det.backbone == "efficientnet_lite0"
    assert tuple(det.layers) == (2, 3)
    out = tmp_path / "out"
    res = runner.invoke(cli, ["inspect", str(model), str(parts), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "results.csv").exists()


def test_padim_threshold_is_sane_with_few_images():
    """Regression: with fewer images than feature items the closed-form LOO
    needs full-precision features (float16 gave thresholds of 1e8)."""
    from conftest import plant_defect, structured_images
    from gaikan.deep.padim import PaDiM

    good = structured_images(10, size=64, seed=0)
    test = structured_images(10, size=64, seed=5)
    bad, _ = plant_defect(structured_images(10, size=64, seed=6), box=8)
    det = PaDiM(num_threads=1).fit(good)
    s_good, s_bad = det.anomaly_score(test), det.anomaly_score(bad)
    assert det.threshold_ < 10 * s_good.max()
    assert det.threshold_ < np.median(s_bad)
    assert (det.predict(bad) == -1).mean() >= 0.8


def test_set_params_drops_the_cached_extractor(data):
    """Regression: a cached feature extractor survived set_params, so a new
    backbone/layer list was silently ignored."""
    train = data[0][:6]
    det = _padim().fit(train)
    old = det._extractor()
    det.set_params(layers=(3,))
    assert det._extractor() is not old and list(det._extractor().channels) == [112]
    det.fit(train)
    assert det.mean_.shape[-1] == 24 and list(det._extractor().channels) == [112]


def test_patchcore_refit_uses_the_new_bank(data):
    """Regression: the cached bank tensor was only rebuilt when its length
    changed, so a refit with the same bank size scored against the old bank."""
    train, test, _ = data
    det = _patchcore(coreset_ratio=1.0, n_neighbors=0).fit(train[:6])
    first = det.anomaly_score(test[:2])
    det.fit(train[6:12])
    fresh = _patchcore(coreset_ratio=1.0, n_neighbors=0).fit(train[6:12])
    np.testing.assert_array_equal(det.anomaly_score(test[:2]), fresh.anomaly_score(test[:2]))
    assert not np.array_equal(first, fresh.anomaly_score(test[:2]))


def test_default_padim_is_stride_8_and_finds_small_defects():
    """The basket-chosen defaults (issue 14): layers (2, 3, 4) on a stride-8 grid
    with one cell of blur — an 8 px defect in a 64 px image is flagged and the
    map's peak lies on it (the old stride-16 grid had 4×4 cells of 16 px)."""
    from conftest import plant_defect, structured_images
    from gaikan.deep.padim import PaDiM

    good = structured_images(20, size=64, seed=0)
    test = structured_images(8, size=64, seed=5)
    bad, masks = plant_defect(structured_images(8, size=64, seed=6), box=8)
    det = PaDiM(num_threads=1).fit(good)
    assert det.grid_shape_ == (8, 8) and det.grid_sigma == 1.0
    assert det.anomaly_score(bad).min() > det.anomaly_score(test).max()
    maps = det.anomaly_map(bad)
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    dist = [np.abs(np.argwhere(k) - p).max(axis=1).min() for k, p in zip(masks, peaks)]
    assert np.mean(np.array(dist) <= 4) >= 0.75
