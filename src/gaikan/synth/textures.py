"""Synthetic textured surfaces with small planted defects: a data-set family.

Real surfaces (fabric, brushed metal, grained plastic, tiles) are textures
whose good samples differ in phase, not in kind; their defects are small.
This family lets defaults be chosen on data nobody tuned for: each
:class:`TextureSpec` (texture × scale × defect size) is one data set, and
:data:`BASKET` is the set of them used by the benchmarks.

Textures (:data:`TEXTURES`)
    ``weave``   two crossed gratings with random phase and small warps;
    ``grain``   anisotropic smooth noise (wood, plastic);
    ``brushed`` noise blurred strongly along one axis (brushed metal);
    ``speckle`` dense small blobs (sand-blasted, cast).
Defects: ``scratch``, ``crack``, ``spot``, ``stain`` from
:mod:`gaikan.synth.anomalies`, with exact masks.

Elongated parts (``aspect``, width / height): :data:`ELONGATED` is a
second family of 512 × 1280 brushed and grained parts with hairline cracks
and scratches (1–2 px wide), the case a square resize squeezes most.

In memory::

    img, mask = render_texture(TextureSpec("weave"), "scratch", seed=0, index=3)

To disk, in the MVTec AD layout (``train/good``, ``test/<defect>``,
``ground_truth/<defect>/<i>_mask.png``)::

    make_texture_dataset("out/weave", TextureSpec("weave"), n_good=60, n_test_good=20, n_defect=10)
    make_texture_dataset("out/rail", ELONGATED[0], defects=THIN_DEFECTS)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import ParameterError
from .anomalies import plant

__all__ = [
    "BASKET",
    "ELONGATED",
    "TEXTURES",
    "TEXTURE_DEFECTS",
    "THIN_DEFECTS",
    "TextureSpec",
    "make_texture_dataset",
    "render_texture",
]

TEXTURES = ("weave", "grain", "brushed", "speckle")
TEXTURE_DEFECTS = ("scratch", "crack", "spot", "stain")


@dataclass(frozen=True)
class TextureSpec:
    """One data set of the family.

    Parameters
    ----------
    texture : str
        One of :data:`TEXTURES`.
    scale : float
        Texture scale: 1 is the nominal feature size, 2 twice as coarse.
    defect_size : float
        Defect extent as a fraction of the image's shorter side.
    size : int
        Image height in pixels (and width, for a square part).
    aspect : float
        Width / height: 2.5 gives an elongated part (e.g. 512 × 1280), as
        line cameras see rails, strips and shafts.
    """

    texture: str = "weave"
    scale: float = 1.0
    defect_size: float = 0.06
    size: int = 256
    aspect: float = 1.0

    @property
    def name(self) -> str:
        shape = "" if self.aspect == 1.0 else f"-a{self.aspect:g}"
        return f"{self.texture}-s{self.scale:g}-d{self.defect_size:g}{shape}"

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return self.size, max(1, round(self.size * self.aspect))


#: The data sets benchmarks choose defaults on: every texture, two scales,
#: small and very small defects.
BASKET = tuple(TextureSpec(t, s, d) for t in TEXTURES for s, d in ((1.0, 0.06), (2.0, 0.03)))

#: Elongated parts with hairline defects (thin cracks and scratches, 1–2 px
#: wide at 512 × 1280): what a square resize squeezes most.
ELONGATED = tuple(TextureSpec(t, 1.0, 0.1, size=512, aspect=2.5) for t in ("brushed", "grain"))
#: The defect kinds of :data:`ELONGATED`.
THIN_DEFECTS = ("scratch", "crack")


def _rng(spec: TextureSpec, seed: int, split: str, index: int, what: str) -> np.random.Generator:
    key = f"{spec.name}|{spec.size}|{seed}|{split}|{index}|{what}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _normalise(field: np.ndarray, mean: float, std: float) -> np.ndarray:
    return mean + std * (field - field.mean()) / max(float(field.std()), 1e-9)


def _texture(spec: TextureSpec, rng: np.random.Generator) -> np.ndarray:
    (n, m), s = spec.shape, spec.scale
    rr, cc = np.mgrid[:n, :m].astype(np.float64)
    # one family-wide orientation per data set (a product), a little jitter per part
    base = _rng(spec, 0, "", 0, "orientation").uniform(0, np.pi)
    ang = base + rng.normal(0, 0.03)
    fine = ndimage.gaussian_filter(rng.normal(0, 1, (n, m)), 0.8)
    if spec.texture == "weave":
        period = 10.0 * s
        warp = ndimage.gaussian_filter(rng.normal(0, 1, (n, m)), 6 * s) * 8
        u = rr * np.cos(ang) + cc * np.sin(ang) + warp
        v = -rr * np.sin(ang) + cc * np.cos(ang) + warp
        ph = rng.uniform(0, 2 * np.pi, 2)
        f = np.sin(2 * np.pi * u / period + ph[0]) * np.sin(2 * np.pi * v / period + ph[1])
        field = f + 0.25 * fine
    elif spec.texture == "grain":
        noise = rng.normal(0, 1, (n, m))
        field = ndimage.gaussian_filter(noise, (1.0 * s, 5.0 * s)) + 0.15 * fine
        field = ndimage.rotate(field, np.degrees(ang), reshape=False, mode="reflect")
    elif spec.texture == "brushed":
        noise = rng.normal(0, 1, (n, m))
        field = ndimage.gaussian_filter(noise, (0.6 * s, 12.0 * s)) + 0.1 * fine
        field = ndimage.rotate(field, np.degrees(ang), reshape=False, mode="reflect")
    elif spec.texture == "speckle":
        dots = (rng.random((n, m)) < 0.02 / s).astype(np.float64)
        field = ndimage.gaussian_filter(dots, 1.2 * s) + 0.05 * fine
    else:
        raise ParameterError(f"unknown texture {spec.texture!r}; choose from {', '.join(TEXTURES)}")
    shade = 6.0 * (rr / n - 0.5) * rng.normal(0, 0.3)  # slow illumination change
    return np.clip(_normalise(field, 128.0, 22.0) + shade, 0, 255)


def render_texture(
    spec: TextureSpec, defect: str = "good", *, seed: int = 0, split: str = "test", index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One sample: a good surface or one with a planted defect.

    Returns
    -------
    image : ndarray, shape (size, width), uint8
        ``spec.shape``: square unless ``spec.aspect`` says otherwise.
    mask : ndarray of bool, shape (size, width)
        Empty for a good sample.
    """
    img = _texture(spec, _rng(spec, seed, split, index, "texture"))
    mask = np.zeros(img.shape, bool)
    if defect != "good":
        if defect not in TEXTURE_DEFECTS:
            raise ParameterError(
                f"unknown defect {defect!r}; choose from {', '.join(TEXTURE_DEFECTS)}"
            )
        img, mask = plant(img, defect, _rng(spec, seed, split, index, defect), spec.defect_size)
    return np.rint(img).astype(np.uint8), mask


def _save(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_texture_dataset(
    root: str | os.PathLike,
    spec: TextureSpec,
    *,
    n_good: int = 60,
    n_test_good: int = 20,
    n_defect: int = 10,
    defects: tuple[str, ...] = TEXTURE_DEFECTS,
    seed: int = 0,
) -> Path:
    """Write one data set in the MVTec AD layout; return its root.

    The same arguments give byte-identical files.
    """
    out = Path(root)
    for i in range(n_good):
        _save(
            out / "train" / "good" / f"{i:03d}.png",
            render_texture(spec, seed=seed, split="train", index=i)[0],
        )
    for i in range(n_test_good):
        _save(out / "test" / "good" / f"{i:03d}.png", render_texture(spec, seed=seed, index=i)[0])
    for d in defects:
        for i in range(n_defect):
            img, mask = render_texture(spec, d, seed=seed, index=1000 + i)
            _save(out / "test" / d / f"{i:03d}.png", img)
            _save(out / "ground_truth" / d / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return out
