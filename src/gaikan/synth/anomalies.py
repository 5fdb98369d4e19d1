"""Planted anomalies with exact masks: arrays in, arrays out.

Used twice: to make the synthetic textured-surface data sets
(:mod:`gaikan.synth.textures`) and, by ``gaikan fit --detector auto``, to
plant anomalies in held-out *good* images so that candidate configurations
can be compared without a single real defect.

:func:`plant` takes a grey image (H, W) on the 0–255 scale and a numpy
``Generator`` and returns ``(image, mask)``: the new image (float64, clipped
to 0–255) and a bool mask of the anomaly.

Kinds (:data:`ANOMALY_KINDS`)
    ``scratch``  a thin straight line, 1–2 px, brighter or darker;
    ``crack``    a thin dark random-walk polyline;
    ``spot``     a small filled ellipse, brighter or darker;
    ``stain``    a smooth low-contrast blob (mask: weight ≥ 0.5);
    ``noise``    a patch of smooth random texture blended in (a stand-in for
                 Perlin-noise patches);
    ``cutpaste`` a patch copied from elsewhere in the same image;
    ``blur``     a local Gaussian blur within a disc;
    ``bright``   a local brightness change within a disc.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..errors import ParameterError

__all__ = ["ANOMALY_KINDS", "plant"]

Planter = Callable[[np.ndarray, np.random.Generator, float], tuple[np.ndarray, np.ndarray]]


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _contrast(img: np.ndarray) -> float:
    """A change that stands out of this image's own variation (≥ 25 grey levels)."""
    return max(25.0, 2.5 * float(np.std(img)))


def _centre(shape: tuple[int, int], r: float, rng: np.random.Generator) -> tuple[float, float]:
    h, w = shape
    m = min(r + 2, h / 2 - 1, w / 2 - 1)
    return float(rng.uniform(m, h - m)), float(rng.uniform(m, w - m))


def _line_mask(shape: tuple[int, int], pts: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of a polyline through ``pts`` (k, 2) (row, col)."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    best = np.full(shape, np.inf)
    for a, b in itertools.pairwise(pts):
        d = b - a
        t = ((rr - a[0]) * d[0] + (cc - a[1]) * d[1]) / max(float(d @ d), 1e-9)
        t = np.clip(t, 0.0, 1.0)
        best = np.minimum(best, np.hypot(rr - a[0] - t * d[0], cc - a[1] - t * d[1]))
    return best <= width / 2


def _scratch(img, rng, size):
    h, w = img.shape
    length = size * min(h, w) * rng.uniform(0.8, 1.6)
    cy, cx = _centre((h, w), length / 2, rng)
    ang = rng.uniform(0, np.pi)
    d = np.array([np.sin(ang), np.cos(ang)]) * length / 2
    mask = _line_mask((h, w), np.array([[cy, cx] - d, [cy, cx] + d]), rng.uniform(1.0, 2.2))
    out = img.copy()
    out[mask] += _sign(rng) * _contrast(img)
    return out, mask


def _crack(img, rng, size):
    h, w = img.shape
    steps = 6
    step = size * min(h, w) * 1.2 / steps
    p = np.array(_centre((h, w), size * min(h, w), rng))
    ang = rng.uniform(0, 2 * np.pi)
    pts = [p]
    for _ in range(steps):
        ang += rng.normal(0, 0.5)
        p = np.clip(p + step * np.array([np.sin(ang), np.cos(ang)]), 1, [h - 2, w - 2])
        pts.append(p)
    mask = _line_mask((h, w), np.array(pts), rng.uniform(1.0, 1.8))
    out = img.copy()
    out[mask] -= _contrast(img)
    return out, mask


def _ellipse(shape, rng, size):
    h, w = shape
    a = max(1.5, size * min(h, w) / 2 * rng.uniform(0.6, 1.0))
    b = a * rng.uniform(0.5, 1.0)
    cy, cx = _centre(shape, a, rng)
    ang = rng.uniform(0, np.pi)
    rr, cc = np.mgrid[:h, :w]
    y, x = rr - cy, cc - cx
    u = (x * np.cos(ang) + y * np.sin(ang)) / a
    v = (-x * np.sin(ang) + y * np.cos(ang)) / b
    return u * u + v * v, (cy, cx), a


def _spot(img, rng, size):
    q, _, _ = _ellipse(img.shape, rng, size)
    mask = q <= 1.0
    out = img.copy()
    out[mask] += _sign(rng) * _contrast(img)
    return out, mask


def _stain(img, rng, size):
    q, _, _ = _ellipse(img.shape, rng, size * 1.5)
    weight = np.exp(-q * np.log(2.0))  # 0.5 at the ellipse's edge
    out = img + _sign(rng) * 0.8 * _contrast(img) * weight
    return out, weight >= 0.5


def _noise(img, rng, size):
    q, _, _ = _ellipse(img.shape, rng, size * 1.3)
    mask = q <= 1.0
    field = ndimage.gaussian_filter(rng.normal(0, 1, img.shape), rng.uniform(1.0, 3.0))
    field *= _contrast(img) / max(float(field[mask].std()), 1e-9)
    out = img.copy()
    out[mask] = float(img[mask].mean()) + field[mask]
    return out, mask


def _cutpaste(img, rng, size):
    h, w = img.shape
    ph = max(3, int(size * h * rng.uniform(0.8, 1.3)))
    pw = max(3, int(size * w * rng.uniform(0.8, 1.3)))
    ph, pw = min(ph, h // 2), min(pw, w // 2)
    y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    for _ in range(20):  # a destination away from the source
        y1, x1 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        if abs(int(y1) - int(y0)) >= ph or abs(int(x1) - int(x0)) >= pw:
            break
    patch = img[y0 : y0 + ph, x0 : x0 + pw]
    if rng.random() < 0.5:
        patch = patch[::-1, ::-1]
    out = img.copy()
    out[y1 : y1 + ph, x1 : x1 + pw] = patch
    mask = np.zeros(img.shape, bool)
    mask[y1 : y1 + ph, x1 : x1 + pw] = True
    return out, mask & (np.abs(out - img) > 1e-9)


def _blur(img, rng, size):
    q, _, _ = _ellipse(img.shape, rng, size * 1.5)
    mask = q <= 1.0
    out = img.copy()
    out[mask] = ndimage.gaussian_filter(img, rng.uniform(2.0, 4.0))[mask]
    return out, mask


def _bright(img, rng, size):
    q, _, _ = _ellipse(img.shape, rng, size * 1.3)
    mask = q <= 1.0
    out = img.copy()
    out[mask] += _sign(rng) * 0.8 * _contrast(img)
    return out, mask


_PLANTERS: dict[str, Planter] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "stain": _stain,
    "noise": _noise,
    "cutpaste": _cutpaste,
    "blur": _blur,
    "bright": _bright,
}
#: Every kind :func:`plant` knows.
ANOMALY_KINDS = tuple(_PLANTERS)


def plant(
    image: np.ndarray, kind: str, rng: np.random.Generator, size: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Plant one anomaly of ``kind`` in ``image``.

    Parameters
    ----------
    image : ndarray, shape (H, W), 0–255
    kind : str
        One of :data:`ANOMALY_KINDS`.
    rng : numpy.random.Generator
        All randomness comes from it.
    size : float
        Typical extent as a fraction of the image's shorter side.

    Returns
    -------
    image : ndarray, shape (H, W), float64, clipped to 0–255
    mask : ndarray of bool, shape (H, W)
        Where the anomaly is (never empty): every masked pixel changed by
        more than half a grey level, and no pixel outside it by more,
        except the soft rim of a ``stain`` (less than half its peak change).
    """
    try:
        planter = _PLANTERS[kind]
    except KeyError:
        raise ParameterError(
            f"unknown anomaly {kind!r}; choose from {', '.join(_PLANTERS)}"
        ) from None
    img = np.asarray(image, dtype=np.float64)
    for _ in range(5):
        out, mask = planter(img, rng, size)
        out = np.clip(out, 0.0, 255.0)
        mask &= np.abs(out - img) > 0.5
        if mask.any():
            return out, mask
    raise ParameterError(f"could not plant a visible {kind!r} in this image (is it saturated?)")
