"""Bringing an image to a model's size, and a map back to the image's pixels.

Two modes, chosen at fit time (``gaikan fit --resize stretch|pad``) and
stored in the model file's meta (``"resize"``; files without the key are
``stretch``), applied the same way wherever images are brought to the
model's size:

``stretch`` (default)
    Resize to the model's H×W, aspect not kept (what gaikan always did).
``pad``
    Resize so the whole image fits inside H×W with its aspect kept (the
    longer side, relative to the model's, fills it), centre it and fill the
    rest by *reflecting* the image at its border.  Reflection, not edge
    replication or a constant: a constant draws a step edge around every
    image and edge replication draws streaks, both structure that good
    parts of another aspect ratio put elsewhere and that deep features and
    window statistics respond to; a reflection continues the surface's own
    texture and grey levels, so the pad looks like more of the part.  The
    pad is never scored as the part: maps are cropped to the content
    before they are resized back, and the hottest point is searched inside
    the content only.

All functions take and return arrays; :class:`Placement` holds the
geometry (where the content lies inside the model-size image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = [
    "RESIZE_MODES",
    "Placement",
    "apply_meta",
    "check_mode",
    "content",
    "map_to_original",
    "mask_pad",
    "placement",
    "point_to_model",
    "point_to_original",
    "resize_mode",
    "stamp",
    "to_model",
]

RESIZE_MODES = ("stretch", "pad")
#: Meta key of the model file that holds the mode.
META_KEY = "resize"


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`RESIZE_MODES`, else ParameterError."""
    if mode not in RESIZE_MODES:
        raise ParameterError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    return mode


def resize_mode(model: Any) -> str:
    """How images are brought to ``model``'s size: its ``resize_`` attribute
    (set from the model file's meta), ``"stretch"`` when absent."""
    return check_mode(str(getattr(model, "resize_", "stretch") or "stretch"))


def stamp(mf: Any, mode: str) -> Any:
    """Record ``mode`` in a :class:`~gaikan.modelfile.ModelFile`'s meta (only
    ``pad``: a stretched model's file stays as it always was); return ``mf``."""
    if check_mode(mode) != "stretch":
        mf.meta[META_KEY] = mode
    return mf


def apply_meta(model: Any, meta: Any, source: Any = "the model file") -> Any:
    """Set ``model.resize_`` from a model file's meta (absent: nothing is set,
    which reads as ``stretch``); return ``model``.

    Raises
    ------
    gaikan.errors.ModelFileError
        The meta names a mode gaikan does not know.
    """
    mode = meta.get(META_KEY) if isinstance(meta, dict) else None
    if mode is None:
        return model
    if mode not in RESIZE_MODES:
        from .errors import ModelFileError

        raise ModelFileError(
            f"{source}: unknown resize mode {mode!r} in the meta (this gaikan knows "
            f"{', '.join(RESIZE_MODES)}); update gaikan"
        )
    model.resize_ = mode
    return model


@dataclass(frozen=True)
class Placement:
    """Where an original image lies inside the model-size image.

    Attributes
    ----------
    original : (int, int)
        The original (H0, W0).
    size : (int, int)
        The model's (H, W).
    top, left : int
        Offset of the content inside the model-size image.
    inner : (int, int)
        The content's (h, w) inside it; ``size`` itself when stretched.
    """

    original: tuple[int, int]
    size: tuple[int, int]
    top: int
    left: int
    inner: tuple[int, int]

    @property
    def padded(self) -> bool:
        return self.inner != self.size


def placement(original: tuple[int, int], size: tuple[int, int], mode: str = "stretch") -> Placement:
    """The geometry of bringing an ``original`` (H0, W0) image to ``size`` (H, W).

    With ``pad`` the scale is ``min(H / H0, W / W0)``, the content is
    ``round(H0 · scale) × round(W0 · scale)`` (at least 1) and centred
    (the odd pixel of padding goes to the bottom / right).
    """
    h0, w0 = (int(v) for v in original)
    h, w = (int(v) for v in size)
    if min(h0, w0, h, w) < 1:
        raise ParameterError(f"image sizes must be positive, got {original} and {size}")
    if check_mode(mode) == "stretch":
        return Placement((h0, w0), (h, w), 0, 0, (h, w))
    scale = min(h / h0, w / w0)
    ih = min(h, max(1, round(h0 * scale)))
    iw = min(w, max(1, round(w0 * scale)))
    return Placement((h0, w0), (h, w), (h - ih) // 2, (w - iw) // 2, (ih, iw))


def _resize(a: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if a.shape == tuple(hw):
        return np.asarray(a, dtype=np.float64)
    pil = Image.fromarray(np.asarray(a, dtype=np.float32), mode="F")
    how = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((hw[1], hw[0]), how), dtype=np.float64)


def _pad_reflect(a: np.ndarray, p: Placement) -> np.ndarray:
    """Reflect ``a`` (the content, shape ``p.inner``) out to ``p.size``."""
    h, w = p.size
    widths = ((p.top, h - p.top - a.shape[0]), (p.left, w - p.left - a.shape[1]))
    if min(a.shape) < 2:  # nothing to reflect across a single row / column
        return np.pad(a, widths, mode="edge")
    # numpy reflects repeatedly when the pad is wider than the content
    return np.pad(a, widths, mode="reflect")


def to_model(
    image: np.ndarray, size: tuple[int, int], mode: str = "stretch"
) -> tuple[np.ndarray, Placement]:
    """Bring one image to the model's size.

    Parameters
    ----------
    image : ndarray, shape (H0, W0)
    size : (int, int)
        The model's (H, W).
    mode : {"stretch", "pad"}

    Returns
    -------
    out : ndarray, shape (H, W), float64
    placement : Placement
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ParameterError(f"expected one grey image (H, W), got shape {image.shape}")
    p = placement(image.shape, size, mode)
    inner = _resize(image, p.inner)
    return (_pad_reflect(inner, p) if p.padded else inner), p


def content(a: np.ndarray, p: Placement) -> np.ndarray:
    """The content part of a model-size array (H, W): the pad cropped off."""
    return a[p.top : p.top + p.inner[0], p.left : p.left + p.inner[1]]


def mask_pad(a: np.ndarray, p: Placement) -> np.ndarray:
    """A copy of a model-size map with the pad set to the content's minimum,
    so the pad never holds the peak (and shows no heat)."""
    if not p.padded:
        return a
    out = np.full_like(a, content(a, p).min())
    out[p.top : p.top + p.inner[0], p.left : p.left + p.inner[1]] = content(a, p)
    return out


def map_to_original(amap: np.ndarray, p: Placement) -> np.ndarray:
    """A model-size map (or a map on any grid over it) in the original pixels:
    crop the pad, then resize (bilinear) to the original (H0, W0)."""
    amap = np.asarray(amap, dtype=np.float64)
    if amap.shape != p.size:  # a coarser map over the model-size image
        amap = _resize(amap, p.size)
    return _resize(content(amap, p), p.original)


def point_to_original(row: int, col: int, p: Placement) -> tuple[int, int]:
    """A model-size pixel to the original's pixel grid (pixel centres matched;
    a pixel in the pad goes to the nearest border pixel)."""
    ih, iw = p.inner
    h0, w0 = p.original
    r = min(max(row - p.top, 0), ih - 1)
    c = min(max(col - p.left, 0), iw - 1)
    r0 = round((r + 0.5) * h0 / ih - 0.5)
    c0 = round((c + 0.5) * w0 / iw - 0.5)
    return int(min(max(r0, 0), h0 - 1)), int(min(max(c0, 0), w0 - 1))


def point_to_model(row: int, col: int, p: Placement) -> tuple[int, int]:
    """An original pixel to the model-size pixel grid (inverse of
    :func:`point_to_original` up to rounding)."""
    ih, iw = p.inner
    h0, w0 = p.original
    r = round((row + 0.5) * ih / h0 - 0.5)
    c = round((col + 0.5) * iw / w0 - 0.5)
    return int(min(max(r, 0), ih - 1)) + p.top, int(min(max(c, 0), iw - 1)) + p.left
