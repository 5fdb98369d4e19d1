import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import reference as ref
from gaikan.patches import extract
from gaikan.taguchi import (
    MTUnitSpace,
    RTUnitSpace,
    fit_gaussians,
    loo_mahalanobis,
    mahalanobis,
    mean_self_similarity,
    rt_features,
    self_similarity,
    soart3,
    soartc_features,
)

vec = arrays(np.float64, st.integers(2, 30), elements=st.floats(-300, 300, allow_nan=False))


def test_soart3_matches_reference():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y, x = rng.uniform(0, 255, (2, 50))
        np.testing.assert_allclose(soart3(y, x), ref.soart3(y, x), rtol=1e-12)


def test_soart3_batched_rows():
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 255, (4, 7, 20))
    x = rng.uniform(0, 255, (7, 20))
    got = soart3(y, x[None])
    assert got.shape == (4, 7, 3)
    for i in range(4):
        for j in range(7):
            np.testing.assert_allclose(got[i, j], ref.soart3(y[i, j], x[j]), rtol=1e-12)


@given(vec)
def test_soart3_of_vector_against_itself_is_zero(x):
    # β = 1 exactly, so the residual vanishes: (log β, log η, log γ) = 0
    np.testing.assert_array_equal(soart3(x, x), [0.0, 0.0, 0.0])


@given(st.data())
def test_log_gamma_never_positive(data):
    x = data.draw(vec)
    y = data.draw(arrays(np.float64, x.shape, elements=st.floats(-300, 300, allow_nan=False)))
    f = soart3(y, x)
    assert f[2] <= 0.0
    assert f[1] >= 0.0


def test_soart3_beta_floor_and_errors():
    f = soart3(np.array([-5.0, -5.0]), np.array([1.0, 1.0]))
    assert f[0] == pytest.approx(np.log(1e-12))
    with pytest.raises(ValueError):
        soart3(np.ones(3), np.ones(4))


def test_self_similarity_matches_reference():
    p = np.random.default_rng(3).uniform(0, 255, (9, 16))
    np.testing.assert_allclose(self_similarity(p), ref.similarity(p), rtol=1e-13)


def test_mean_self_similarity_one_gemm_equals_mean_of_matrices():
    q = np.random.default_rng(4).uniform(0, 255, (7, 12, 9))
    np.testing.assert_allclose(mean_self_similarity(q), self_similarity(q).mean(0), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("loo", [0, 1])
def test_soartc_features_backends(backend, loo):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (6, 20, 20)).astype(float)
    q = extract(imgs, 5, 3)
    sbar = mean_self_similarity(q)
    s = self_similarity(q)
    refr = (6 * sbar[None] - s) / 5 if loo else np.broadcast_to(sbar, s.shape)
    want = soart3(s, refr)
    got = soartc_features(q, sbar, backend=backend, loo_n=6 if loo else 0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # float32 Gram on integer pixels is exact (every partial sum < 2**24)
    got32 = soartc_features(q, sbar, backend=backend, loo_n=6 if loo else 0, gram_dtype=np.float32)
    np.testing.assert_allclose(got32, got, rtol=1e-12, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 40), m=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_mt_unit_space_mean_distance_is_n_minus_1_over_n(n, m, seed):
    assume(n > m + 1)
    x = np.random.default_rng(seed).normal(size=(n, m)) * np.arange(1, m + 1)
    d = MTUnitSpace(reg_rel=0.0, reg_abs=0.0).fit(x).distance(x)
    assert d.mean() == pytest.approx((n - 1) / n, rel=1e-8)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 40), k=st.integers(3, 25), seed=st.integers(0, 10_000))
def test_rt_unit_space_mean_distance_is_n_minus_1_over_n(n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(50, 200, (1, k)) + rng.normal(0, 5, (n, k)) * rng.uniform(0.5, 2, (n, 1))
    d = RTUnitSpace(reg_rel=0.0, reg_abs=0.0).fit(x).distance(x)
    assume(np.isfinite(d).all())
    assert d.mean() == pytest.approx((n - 1) / n, rel=1e-6)


def test_rt_features_match_reference():
    rng = np.random.default_rng(6)
    m = rng.uniform(10, 200, 25)
    for y in rng.uniform(0, 255, (10, 25)):
        np.testing.assert_allclose(rt_features(y, m), ref.rt_items(y, m), rtol=1e-12)
    # all-zero mean: β = 0 and V_e = S_T / (k − 1), no division by zero
    y = rng.uniform(0, 255, 25)
    np.testing.assert_allclose(rt_features(y, np.zeros(25)), [0.0, np.sqrt(y @ y / 24)])


def test_mahalanobis_matches_explicit_inverse():
    rng = np.random.default_rng(7)
    f = rng.normal(size=(30, 5, 3)) @ rng.normal(size=(3, 3))
    t = rng.normal(size=(4, 5, 3))
    mean, whiten = fit_gaussians(f)
    np.testing.assert_allclose(mahalanobis(t, mean, whiten), ref.mahalanobis_stage(f, t), rtol=1e-9)


def test_loo_mahalanobis_matches_refitting():
    rng = np.random.default_rng(8)
    f = rng.normal(size=(12, 4, 3))
    g = f + rng.normal(0, 0.1, f.shape)
    got = loo_mahalanobis(f, g, chunk=5)
    for t in range(12):
        keep = np.delete(np.arange(12), t)
        want = ref.mahalanobis_stage(f[keep], g[t : t + 1])[0]
        np.testing.assert_allclose(got[t], want, rtol=1e-9)


def test_soart3_map_function_matches_detector():
    import gaikan
    from gaikan.taguchi import soart3_map

    rng = np.random.default_rng(9)
    good = rng.integers(0, 256, (6, 20, 20)).astype(float)
    det = gaikan.SOART3Map(kernel=5, stride=5).fit(good)
    np.testing.assert_array_equal(
        soart3_map(good[:2], good.mean(0), 5, 5), det.soart_image(good[:2])
    )
