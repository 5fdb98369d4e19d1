"""The patch ("convolution") engine: im2col by stride tricks.

Every metric in gaikan stands on :func:`extract`: the k×k windows of an
image whose top-left corners lie on a stride-s grid, flattened row-major
(``../shared/docs/SOART.md`` §1).  A 2-D correlation with any kernel is then
one matrix product, and :func:`fold` brings per-window values back to image
resolution.  No Python loop runs over windows or pixels.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ParameterError

__all__ = ["correlate2d", "extract", "fold", "grid_shape"]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ParameterError(f"{name} must be an int or a pair of ints, got {value!r}")
        a, b = int(value[0]), int(value[1])
    else:
        a = b = int(value)
    if a < 1 or b < 1:
        raise ParameterError(f"{name} must be >= 1, got {value!r}")
    return a, b


def grid_shape(
    image_shape: tuple[int, int],
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
) -> tuple[int, int]:
    """Number of windows (nh, nw) along each axis.

    Parameters
    ----------
    image_shape : (H, W)
    kernel, stride : int or (int, int)

    Returns
    -------
    (nh, nw) with ``nh = (H - kh) // sh + 1``.

    Raises
    ------
    ValueError
        If the kernel is larger than the image.
    """
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    h, w = int(image_shape[0]), int(image_shape[1])
    if kh > h or kw > w:
        raise ParameterError(f"kernel {kh}x{kw} is larger than the image {h}x{w}")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def extract(
    images: np.ndarray,
    kernel: int | tuple[int, int] = 10,
    stride: int | tuple[int, int] = 5,
) -> np.ndarray:
    """Extract flattened windows (im2col).

    Parameters
    ----------
    images : ndarray, shape (n, H, W) or (H, W)
    kernel, stride : int or (int, int)

    Returns
    -------
    ndarray, shape (n, P, kh*kw) or (P, kh*kw)
        ``P = nh*nw`` windows in row-major order of their grid position,
        each flattened row-major.  A new contiguous array (a copy).
    """
    arr = np.asarray(images)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise ParameterError(f"images must have shape (n, H, W) or (H, W), got {arr.shape}")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    nh, nw = grid_shape(arr.shape[1:], (kh, kw), (sh, sw))
    win = np.lib.stride_tricks.sliding_window_view(arr, (kh, kw), axis=(1, 2))
    win = win[:, : (nh - 1) * sh + 1 : sh, : (nw - 1) * sw + 1 : sw]
    out = np.ascontiguousarray(win).reshape(arr.shape[0], nh * nw, kh * kw)
    return out[0] if single else out


def _cover(length: int, k: int, s: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last window index covering each pixel along one axis.

    A pixel that no window covers (past the last window, or in a gap when
    s > k) takes the ranges of its nearest covered pixel (SOART.md §1;
    ties go to the lower index).
    """
    pos = np.minimum(np.arange(length), (n - 1) * s + k - 1)
    if s > k:
        i = pos // s
        gap = pos - i * s >= k
        left, right = i * s + k - 1, (i + 1) * s
        pos = np.where(gap, np.where(pos - left <= right - pos, left, right), pos)
    first = np.maximum(0, -((k - 1 - pos) // s))  # ceil((pos - k + 1) / s)
    last = np.minimum(n - 1, pos // s)
    return first, last


def fold(
    values: np.ndarray,
    image_shape: tuple[int, int],
    kernel: int | tuple[int, int] = 10,
    stride: int | tuple[int, int] = 5,
) -> np.ndarray:
    """Scatter-mean per-window values back to image resolution.

    Each pixel takes the mean of the values of all windows that cover it;
    pixels that no window covers take the value of their nearest covered
    pixel.

    Parameters
    ----------
    values : ndarray, shape (n, nh, nw) or (nh, nw)
    image_shape : (H, W)
    kernel, stride : int or (int, int)

    Returns
    -------
    ndarray, shape (n, H, W) or (H, W), float64
    """
    vals = np.asarray(values, dtype=np.float64)
    single = vals.ndim == 2
    if single:
        vals = vals[None]
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    h, w = int(image_shape[0]), int(image_shape[1])
    nh, nw = grid_shape((h, w), (kh, kw), (sh, sw))
    if vals.shape[1:] != (nh, nw):
        raise ParameterError(f"values have grid {vals.shape[1:]}, expected {(nh, nw)}")
    r0, r1 = _cover(h, kh, sh, nh)
    c0, c1 = _cover(w, kw, sw, nw)
    total = np.zeros((vals.shape[0], h, w))
    # At most ceil(k/s) windows cover a pixel along an axis: loop over those
    # few offsets (not over pixels), summing exactly rather than by prefix
    # sums so small values keep full relative precision.
    for a in range(math.ceil(kh / sh)):
        rows = r0 + a
        rok = rows <= r1
        rows = np.minimum(rows, nh - 1)
        for b in range(math.ceil(kw / sw)):
            cols = c0 + b
            cok = cols <= c1
            cols = np.minimum(cols, nw - 1)
            sel = vals[:, rows[:, None], cols[None, :]]
            total += np.where(rok[:, None] & cok[None, :], sel, 0.0)
    count = (r1 - r0 + 1)[:, None] * (c1 - c0 + 1)[None, :]
    out = total / count
    return out[0] if single else out


def correlate2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D cross-correlation, 'valid' mode, as one matrix product.

    Equals ``scipy.signal.correlate2d(image, kernel, mode="valid")``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    kernel : ndarray, shape (kh, kw)

    Returns
    -------
    ndarray, shape (H - kh + 1, W - kw + 1)
    """
    img = np.asarray(image)
    ker = np.asarray(kernel)
    if img.ndim != 2 or ker.ndim != 2:
        raise ParameterError("correlate2d takes a 2-D image and a 2-D kernel")
    nh, nw = grid_shape(img.shape, ker.shape, 1)
    cols = extract(img, ker.shape, 1)
    dtype = np.result_type(img.dtype, ker.dtype, np.float64)
    return (cols.astype(dtype, copy=False) @ ker.ravel().astype(dtype)).reshape(nh, nw)
