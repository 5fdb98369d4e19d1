import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from gaikan.patches import correlate2d, extract, fold, grid_shape


def test_extract_matches_loop_reference():
    img = np.arange(23 * 17, dtype=float).reshape(23, 17)
    got = extract(img, 5, 3)
    want, grid = ref.patches(img, 5, 3)
    assert got.shape == (grid[0] * grid[1], 25)
    np.testing.assert_array_equal(got, want)


def test_extract_batched_and_rectangular():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (3, 12, 20)).astype(float)
    got = extract(imgs, (3, 4), (2, 5))
    assert got.shape == (3, 5 * 4, 12)
    np.testing.assert_array_equal(got[1, 0], imgs[1, 0:3, 0:4].ravel())
    np.testing.assert_array_equal(got[2, 4], imgs[2, 2:5, 0:4].ravel())  # row 1, col 0
    np.testing.assert_array_equal(got[2, 5], imgs[2, 2:5, 5:9].ravel())  # row 1, col 1


def test_grid_shape_and_errors():
    assert grid_shape((100, 100), 10, 5) == (19, 19)
    assert grid_shape((250, 250), 10, 5) == (49, 49)
    with pytest.raises(ValueError, match="larger than the image"):
        grid_shape((8, 8), 10, 5)
    with pytest.raises(ValueError):
        extract(np.zeros((10, 10)), 0, 1)
    with pytest.raises(ValueError):
        extract(np.zeros((2, 3, 4, 5)), 2, 1)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(4, 14),
    w=st.integers(4, 14),
    k=st.integers(1, 4),
    s=st.integers(1, 4),
    seed=st.integers(0, 10_000),
)
def test_fold_matches_loop_reference(h, w, k, s, seed):
    nh, nw = grid_shape((h, w), k, s)
    vals = np.random.default_rng(seed).uniform(0, 1e4, (nh, nw))
    np.testing.assert_allclose(fold(vals, (h, w), k, s), ref.fold(vals, (h, w), k, s), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 5), nh=st.integers(1, 5), nw=st.integers(1, 5), seed=st.integers(0, 999))
def test_extract_fold_round_trip(k, nh, nw, seed):
    # Non-overlapping windows tile the image: extract is a permutation of the
    # pixels, and folding each window's own pixel j back gives pixel j.
    img = np.random.default_rng(seed).uniform(0, 255, (nh * k, nw * k))
    cols = extract(img, k, k)
    rebuilt = cols.reshape(nh, nw, k, k).transpose(0, 2, 1, 3).reshape(img.shape)
    np.testing.assert_array_equal(rebuilt, img)
    # fold of per-window means equals the block-mean image
    means = cols.mean(axis=1).reshape(nh, nw)
    np.testing.assert_allclose(fold(means, img.shape, k, k), np.kron(means, np.ones((k, k))))


def test_fold_constant_and_uncovered_pixels():
    # 12 = (2-1)*5 + 5 + 2 leftover columns: uncovered pixels copy the nearest covered one
    vals = np.array([[1.0, 3.0]])
    out = fold(vals, (5, 12), 5, 5)
    assert out.shape == (5, 12)
    np.testing.assert_array_equal(out[:, :5], 1.0)
    np.testing.assert_array_equal(out[:, 5:], 3.0)
    np.testing.assert_allclose(fold(np.full((19, 19), 2.5), (100, 100), 10, 5), 2.5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(3, 16),
    w=st.integers(3, 16),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_correlate2d_matches_scipy(h, w, kh, kw, seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(h, w))
    ker = rng.normal(size=(kh, kw))
    np.testing.assert_allclose(
        correlate2d(img, ker),
        scipy.signal.correlate2d(img, ker, mode="valid"),
        rtol=1e-10,
        atol=1e-12,
    )
