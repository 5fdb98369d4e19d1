"""The one colour policy: calibrated display maps and the overlays drawn from them.

Every picture gaikan shows of an inspection — the overlays ``gaikan
inspect`` writes, the report's gallery and the station's page — is drawn
here, from the same two rules.

Calibration
    The *display map* of an image is its model's localisation map (the
    detector's anomaly map, or a classifier's explanation) stretched
    linearly so that the image's median level shows as 0 and **its maximum
    equals the image score**.  The stretch is monotone, so it does not move
    the hottest point; it puts the map on the score's scale, so the map can
    be read against the threshold, and it keeps the part's ordinary areas
    cool even when a strong defect scores a hundred times the threshold.

Colour scale
    A value ``d`` of the display map is coloured by ``u = d / threshold``:
    the lower half of the colour bar (blue → teal) is linear in ``u`` from 0
    to 1, the upper half (yellow → orange → red) is logarithmic from the
    threshold to ``SPAN`` times it.  The bar jumps from teal to yellow at
    the threshold, so **a part is NG if and only if its overlay shows
    yellow, orange or red** (the verdict is ``score > threshold`` and the
    map's maximum is the score).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "COLOUR_STOPS",
    "SPAN",
    "THRESHOLD_POSITION",
    "calibrate",
    "colour_bar_svg",
    "colour_index",
    "colourise",
    "legend",
    "overlay_png",
    "overlay_rgb",
    "peak",
]

#: Where the threshold sits on the colour bar (0 = bottom, 1 = top).
THRESHOLD_POSITION = 0.5
#: The top of the bar is ``SPAN`` times the threshold (log scale above it).
SPAN = 10.0
#: Colour stops (position, RGB).  The cool half is below the threshold,
#: the warm half above it; the jump at 0.5 is deliberate.
COLOUR_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (20, 30, 120)),
    (0.25, (30, 110, 230)),
    (0.5, (40, 190, 190)),
    (0.5, (255, 225, 0)),
    (0.75, (255, 130, 0)),
    (1.0, (200, 0, 0)),
)
_HALF = 128  # LUT entries per half


def _lut() -> np.ndarray:
    """256 × RGB: entries 0–127 the cool half, 128–255 the warm half."""
    cool = [(p, c) for p, c in COLOUR_STOPS if p < THRESHOLD_POSITION] + [COLOUR_STOPS[2]]
    warm = [(p, c) for p, c in COLOUR_STOPS if p >= THRESHOLD_POSITION][1:]
    out = np.empty((2 * _HALF, 3), dtype=np.uint8)
    for half, stops in ((0, cool), (1, warm)):
        pos = np.array([p for p, _ in stops])
        x = np.linspace(pos[0], pos[-1], _HALF)
        for ch in range(3):
            out[half * _HALF : (half + 1) * _HALF, ch] = np.round(
                np.interp(x, pos, [c[ch] for _, c in stops])
            )
    return out


_LUT = _lut()


def calibrate(amap: np.ndarray, score: float) -> np.ndarray:
    """Display map: ``score · clip((amap − median) / (max − median), 0, 1)``.

    Parameters
    ----------
    amap : ndarray, shape (H, W)
        A localisation map, higher = worse.
    score : float
        The image score (higher = worse), ≥ 0.

    Returns
    -------
    ndarray, shape (H, W), float64
        In [0, score]; its maximum is ``score``, at the map's hottest pixel.
        A map with no pixel above its median (nothing stands out) becomes
        ``score`` everywhere: the whole part carries it.
    """
    m = np.nan_to_num(np.asarray(amap, dtype=np.float64), nan=0.0)
    score = max(float(score), 0.0)
    if m.size == 0:
        return m
    top, level = float(m.max()), float(np.median(m))
    if not (math.isfinite(top) and top > level):
        return np.full(m.shape, score)
    # the fraction first, then the score: score / (top − level) overflows to inf when the
    # spread is subnormal, and inf × 0 is nan on every pixel at the median
    out = np.clip((m - level) / (top - level), 0.0, 1.0) * score
    out.flat[int(np.argmax(m))] = score  # the peak exactly the score, whatever the rounding
    return out


def peak(display: np.ndarray) -> tuple[int, int]:
    """(row, col) of the hottest pixel of a map (the first one on ties)."""
    flat = int(np.argmax(display))
    row, col = divmod(flat, display.shape[1])
    return int(row), int(col)


def colour_index(display: np.ndarray, threshold: float) -> np.ndarray:
    """LUT index 0–255 of every value: ≥ 128 exactly where ``display > threshold``.

    Parameters
    ----------
    display : ndarray, shape (H, W)
    threshold : float
        The model's threshold on the image score (> 0; a threshold of 0 is
        treated as the smallest positive float).

    Returns
    -------
    ndarray of intp, shape (H, W)
    """
    t = max(float(threshold), np.finfo(np.float64).tiny)
    u = np.maximum(np.asarray(display, dtype=np.float64), 0.0) / t
    above = u > 1.0
    with np.errstate(divide="ignore"):
        high = np.minimum(np.log(np.where(above, u, 1.0)) / math.log(SPAN), 1.0)
    low_idx = np.floor(np.minimum(u, 1.0) * (_HALF - 1) + 0.5)
    high_idx = _HALF + np.floor(high * (_HALF - 1) + 0.5)
    return np.where(above, high_idx, low_idx).astype(np.intp)


def colourise(display: np.ndarray, threshold: float) -> np.ndarray:
    """RGB heat image of a display map, shape (H, W, 3), uint8."""
    return _LUT[colour_index(display, threshold)]


def overlay_rgb(
    image: np.ndarray, display: np.ndarray, threshold: float, alpha: float = 0.45
) -> np.ndarray:
    """Blend the heat image of ``display`` over a grey image.

    Parameters
    ----------
    image : ndarray, shape (H, W), 0–255
    display : ndarray, shape (H, W)
        A calibrated display map (:func:`calibrate`).
    threshold : float
    alpha : float
        Opacity of the heat image, in [0, 1].

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != np.shape(display):
        raise ParameterError(f"image {img.shape} and map {np.shape(display)} differ in shape")
    heat = colourise(display, threshold).astype(np.float64)
    grey = np.clip(img, 0, 255)[..., None]
    return np.clip((1 - alpha) * grey + alpha * heat, 0, 255).round().astype(np.uint8)


def overlay_png(
    image: np.ndarray,
    display: np.ndarray,
    threshold: float,
    alpha: float = 0.45,
    compress_level: int = 1,
) -> bytes:
    """:func:`overlay_rgb` encoded as PNG bytes.

    ``compress_level`` 1 (zlib's fastest): several times faster than
    Pillow's default for a file about a third larger, the right trade on a
    line.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(image, display, threshold, alpha)).save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def colour_bar_svg(threshold: float, width: int = 360, lang: str = "en") -> str:
    """A horizontal colour bar with the threshold marked, as inline SVG.

    Parameters
    ----------
    threshold : float
    width : int
        Width in pixels of the bar.
    lang : {"en", "ja"}

    Returns
    -------
    str
        A standalone ``<svg>`` element (no external resources).
    """
    h, pad = 14, 24  # room for the end labels
    words = {"en": ("threshold", "OK", "NG"), "ja": ("しきい値", "良品", "不良")}[
        "ja" if lang == "ja" else "en"
    ]
    rects = []
    for i in range(2 * _HALF):
        x = pad + width * i / (2 * _HALF)
        r, g, b = (int(v) for v in _LUT[i])
        rects.append(
            f'<rect x="{x:.2f}" y="16" width="{width / (2 * _HALF) + 0.6:.2f}" '
            f'height="{h}" fill="rgb({r},{g},{b})"/>'
        )
    tx = pad + width * THRESHOLD_POSITION
    ticks: list[tuple[float, str]] = [
        (0.0, "0"),
        (0.25, _fmt(threshold / 2)),
        (0.5, _fmt(threshold)),
        (0.5 + 0.5 * math.log(3.0) / math.log(SPAN), _fmt(3 * threshold)),
        (1.0, "≥" + _fmt(SPAN * threshold)),
    ]
    labels = "".join(
        f'<text x="{pad + width * p:.1f}" y="44" font-size="10" text-anchor="middle">{t}</text>'
        for p, t in ticks
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2 * pad}" height="50" '
        f'role="img" aria-label="colour bar, {words[0]} {_fmt(threshold)}" '
        'font-family="system-ui,sans-serif">'
        f'<text x="{pad}" y="11" font-size="10">{words[1]}</text>'
        f'<text x="{pad + width}" y="11" font-size="10" text-anchor="end">{words[2]}</text>'
        + "".join(rects)
        + f'<line x1="{tx:.1f}" y1="13" x2="{tx:.1f}" y2="{16 + h + 3}" stroke="black" '
        'stroke-width="2"/>'
        f'<text x="{tx:.1f}" y="11" font-size="10" text-anchor="middle" font-weight="bold">'
        f"{words[0]}</text>" + labels + "</svg>"
    )


def legend(threshold: float | None) -> dict[str, Any]:
    """The colour policy as data (for the station's page and the JSON API)."""
    return {
        "threshold": threshold,
        "threshold_position": THRESHOLD_POSITION,
        "span": SPAN,
        "stops": [[p, list(c)] for p, c in COLOUR_STOPS],
        "rule": "NG if and only if the overlay shows yellow, orange or red",
    }
