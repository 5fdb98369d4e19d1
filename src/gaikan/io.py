"""Images in: loading, validation, dataset layouts.  No maths here.

Grey convention (``SOART.md`` §0): a 2-D float64 array on the 0–255 scale.
8-bit images are taken as they are; 16-bit images are divided by 257;
colour (RGB, RGBA, palette, CMYK, …) is converted to luminance with the
ITU-R BT.601 weights (Pillow's ``convert("L")``), alpha is ignored.
Resizing happens once, here, with an antialiased bilinear filter.

Every problem with a file raises :class:`~gaikan.errors.ImageError` naming
the file, the problem and the fix.  :func:`load_images` never stops a
batch for one bad file: it reports it and goes on.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "LoadResult",
    "MVTecData",
    "classifier_image_shape",
    "decode_image",
    "decode_upload",
    "find_images",
    "folder_label",
    "is_mvtec",
    "load_image",
    "load_images",
    "load_mask",
    "load_mvtec",
    "normalize_size",
    "probe_shapes",
]

#: File name endings taken when a directory is searched for images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Formats accepted by content (Pillow format names).
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "MPO"})
#: Largest image accepted, in pixels (decompression-bomb guard): 64 MP.
DEFAULT_MAX_PIXELS = 64_000_000
#: Images whose grey levels spread less than this (standard deviation) are
#: refused as blank: a lens cap, a dead light or a frozen camera would
#: otherwise be scored, and SOART metrics ignore overall brightness.
MIN_CONTRAST = 0.5
#: Folder names that mark good parts in labelled folder trees.
GOOD_NAMES = frozenset({"good", "ok", "normal", "pass"})


def normalize_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``128`` → ``(128, 128)``; ``(h, w)`` and ``"HxW"`` as :func:`gaikan._validation.as_hw`;
    None stays None."""
    from ._validation import as_hw

    return None if size is None else as_hw(size)


def classifier_image_shape(clf: Any) -> tuple[int, int] | None:
    """(H, W) to load images at for a classifier: the shape it was trained
    at (``input_shape_``; a SOART ViT needs exactly it, CNNs resize anyway),
    else its network input size (``image_size``), else None."""
    shape = getattr(clf, "input_shape_", None)
    if shape is not None and len(shape) >= 2:
        return int(shape[0]), int(shape[1])
    return normalize_size(getattr(clf, "image_size", None))


def _to_grey(im: Image.Image, name: str) -> Image.Image:
    """Convert any Pillow mode to 'L' (8-bit) or 'F' (0–255 float)."""
    mode = im.mode
    if mode == "L":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im, dtype=np.float64) / 257.0
        return Image.fromarray(arr.astype(np.float32), mode="F")
    if mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if float(arr.min()) < 0 or peak > 65535:
            raise ImageError(
                name,
                f"pixel values {arr.min():g}..{peak:g} are outside 8- or 16-bit range",
                "save the image as 8- or 16-bit",
            )
        if peak > 255:
            arr = arr / 257.0
        return Image.fromarray(arr.astype(np.float32), mode="F")
    if mode == "LA":
        return im.getchannel("L")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    # RGB, RGBA, P, CMYK, YCbCr, 1, …: BT.601 luma (alpha ignored).
    return im.convert("L")


#: Leading bytes of the accepted formats: a file that starts like one of them
#: but does not open is reported as damaged, not as "not an image".
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_PIXELS = re.compile(r"\((\d+) pixels\)")


def _sniff(data: bytes) -> str | None:
    """Format whose signature ``data`` starts with, or None."""
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return fmt
    return None


def _decode(
    data: bytes,
    name: str,
    size,
    max_pixels: int,
    allow_blank: bool = False,
    resize: str = "stretch",
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode image bytes to grey float64; also return the original (H, W)
    (after EXIF orientation, before resizing).  ``resize``: how the image is
    brought to ``size`` (:mod:`gaikan.geometry`)."""
    from .geometry import _pad_reflect, check_mode, placement

    size = normalize_size(size)
    check_mode(resize)
    im_source = io.BytesIO(data)
    # The user's limit governs, checked below from the header before any pixel is
    # decoded; Pillow's own bomb guard (89.5 MP) is raised to it, never lowered.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(im_source)
        with im:
            if im.format not in ALLOWED_FORMATS:
                raise ImageError(
                    name,
                    f"{im.format} images are not supported",
                    "use PNG, JPEG, BMP or TIFF",
                )
            w, h = im.size
            if w == 0 or h == 0:
                raise ImageError(name, "the image has zero size", "the file is empty or broken")
            if w * h > max_pixels:
                raise ImageError(
                    name,
                    f"the image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}",
                    "downscale it, or raise the pixel limit (--max-pixels)",
                )
            im.load()
            # EXIF orientation applied (a camera held sideways gives an upright part);
            # multi-frame files (MPO, multi-page TIFF, APNG) give their first frame.
            upright: Image.Image = ImageOps.exif_transpose(im)
            original = (upright.size[1], upright.size[0])
            grey = _to_grey(upright, name)
            place = None if size is None else placement(original, size, resize)
            if place is not None and grey.size != (place.inner[1], place.inner[0]):
                grey = grey.resize((place.inner[1], place.inner[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(grey, dtype=np.float64)
            if not allow_blank and arr.std() < MIN_CONTRAST:
                raise ImageError(
                    name,
                    f"the image is blank (all pixels near grey level {arr.mean():.0f})",
                    "check the camera, lens and lighting",
                )
            if place is not None and place.padded:
                arr = _pad_reflect(arr, place)
            return arr, original
    except ImageError:
        raise
    except UnidentifiedImageError:
        fmt = _sniff(data)
        if fmt is not None:
            raise ImageError(
                name,
                f"corrupt {fmt} file (its header is damaged)",
                "re-export or re-capture the image",
            ) from None
        raise ImageError(
            name, "not an image, or an unsupported format", "use PNG, JPEG, BMP or TIFF"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (Image.MAX_IMAGE_PIXELS, warning turned into an
        # error above) fires from the header, before our pixel limit.
        m = _PIXELS.search(str(exc))
        n = int(m.group(1)) if m else None
        what = f"{n:,} pixels" if n is not None else "too many pixels"
        if n is not None and n <= max_pixels:
            raise ImageError(
                name,
                f"the image header claims {what}, over Pillow's decompression-bomb limit "
                f"of {Image.MAX_IMAGE_PIXELS or 0:,}",
                "downscale it",
            ) from None
        raise ImageError(
            name,
            f"the image header claims {what}, over the limit of {max_pixels:,}",
            "downscale it, or raise the pixel limit (--max-pixels)",
        ) from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode the image", "downscale it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise ImageError(
                name, "the file is truncated", "copy it again from the camera"
            ) from None
        raise ImageError(
            name, f"corrupt image ({msg})", "re-export or re-capture the image"
        ) from None


def load_image(
    path: str | os.PathLike,
    size: int | Sequence[int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_blank: bool = False,
    resize: str = "stretch",
) -> np.ndarray:
    """Load one image as grey float64 (H, W) on the 0–255 scale.

    Parameters
    ----------
    path : path-like
    size : int or (height, width), optional
        Resize to this size (once, antialiased bilinear).
    max_pixels : int
        Refuse larger images (decompression-bomb guard).
    allow_blank : bool
        Accept images with (almost) no contrast; refused by default
        (see :data:`MIN_CONTRAST`).
    resize : {"stretch", "pad"}
        How the image is brought to ``size``: stretched, or with its aspect
        kept and reflect-padded (:mod:`gaikan.geometry`).

    Raises
    ------
    ImageError
        Unreadable path, not an image, corrupt or truncated data, zero
        size, too many pixels, unsupported value range, blank image.
    """
    return _load(path, size, max_pixels, allow_blank, resize)[0]


def _load(
    path: str | os.PathLike, size, max_pixels: int, allow_blank: bool, resize: str = "stretch"
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image`, also returning the original (H, W)."""
    p = Path(path)
    if p.is_dir():
        raise ImageError(p, "is a directory, not an image file")
    try:
        with open(p, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageError(
            p, f"cannot read the file ({exc.strerror or exc})", "check the path and permissions"
        ) from None
    if not data:
        raise ImageError(p, "the file is empty", "copy it again from the camera")
    return _decode(data, str(p), size, max_pixels, allow_blank, resize)


def decode_image(
    data: bytes,
    name: str = "<upload>",
    size: int | Sequence[int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_blank: bool = False,
    resize: str = "stretch",
) -> np.ndarray:
    """Decode image bytes (an upload) like :func:`load_image`.

    The format is decided by content, never by ``name``; ``name`` is used
    only in messages.
    """
    if not data:
        raise ImageError(name, "the upload is empty")
    return _decode(bytes(data), name, size, max_pixels, allow_blank, resize)[0]


def decode_upload(
    data: bytes,
    name: str = "<upload>",
    size: int | Sequence[int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_blank: bool = False,
    resize: str = "stretch",
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, also returning the original (H, W) (after EXIF
    orientation, before resizing): the frame the hottest point refers to."""
    if not data:
        raise ImageError(name, "the upload is empty")
    return _decode(bytes(data), name, size, max_pixels, allow_blank, resize)


def load_mask(path: str | os.PathLike, size: int | Sequence[int] | None = None) -> np.ndarray:
    """Load a defect mask as bool (H, W); resized with nearest neighbour."""
    try:
        with Image.open(path) as im:
            mask = im.convert("L")
            size = normalize_size(size)
            if size is not None and mask.size != (size[1], size[0]):
                mask = mask.resize((size[1], size[0]), Image.Resampling.NEAREST)
            return np.asarray(mask) > 127
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(path, f"unreadable mask ({exc})") from None


def find_images(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a sorted list of image files.

    Files named explicitly are always kept (a non-image then fails at load
    time and is reported); directories contribute files ending in
    :data:`IMAGE_SUFFIXES`, hidden files and ``ground_truth`` folders
    skipped.  Missing paths raise ``FileNotFoundError``.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            found = [
                f
                for f in it
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and "ground_truth" not in f.relative_to(p).parts
            ]
            out.extend(sorted(found))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    seen: set[Path] = set()
    unique = []
    for f in out:
        if f not in seen:
            seen.add(f)
            unique.append(f)
    return unique


def folder_label(path: str | os.PathLike) -> str:
    """Label of an image from its parent folder name (``good`` → ``"good"``)."""
    return Path(path).parent.name


@dataclass
class LoadResult:
    """Images of a batch that loaded, and the files that did not.

    Attributes
    ----------
    images : ndarray, shape (n, H, W), float64
    paths : list of Path
        The files behind ``images``, in order.
    errors : list of (Path, str)
        Files that could not be used and why.
    shapes : list of (int, int)
        Original (H, W) of each image in ``images`` (after EXIF orientation,
        before resizing), aligned with ``images`` and ``paths``: what a
        pixel position in ``images`` is scaled back to.
    """

    images: np.ndarray
    paths: list[Path] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)
    shapes: list[tuple[int, int]] = field(default_factory=list)


def probe_shapes(paths: Sequence[str | os.PathLike], limit: int = 32) -> list[tuple[int, int]]:
    """(H, W) of up to ``limit`` of ``paths`` (evenly spread), from their headers only.

    Files that cannot be opened are left out (loading reports them); EXIF
    rotations are applied, as loading does.
    """
    step = max(1, len(paths) // max(1, limit))
    out = []
    for p in list(paths)[::step][:limit]:
        try:
            with Image.open(p) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90° on load
                    w, h = h, w
        except (OSError, UnidentifiedImageError, ValueError):
            continue
        out.append((int(h), int(w)))
    return out


def load_images(
    paths: Sequence[str | os.PathLike],
    size: int | Sequence[int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_blank: bool = False,
    progress: Callable[[int], None] | None = None,
    resize: str = "stretch",
) -> LoadResult:
    """Load many images; bad files are reported in ``errors``, not raised.

    Without ``size`` every image must have the shape of the first good
    one; an image of another shape is reported with the fix (``size``).

    Parameters
    ----------
    paths : sequence of path-like
    size : int or (height, width), optional
        Resize every image to this size.
    max_pixels : int
        Refuse images with more pixels (checked from the header, before
        decoding); a refused file becomes an entry of ``errors``.
    allow_blank : bool
        Accept images with (almost) no contrast.
    progress : callable, optional
        Called with 1 after each file.
    resize : {"stretch", "pad"}
        How images are brought to ``size`` (see :func:`load_image`).

    Returns
    -------
    LoadResult
        ``images`` (n, H, W), ``paths`` and ``shapes`` (original (H, W) of
        each image) aligned with it, and ``errors``.
    """
    size = normalize_size(size)
    imgs: list[np.ndarray] = []
    ok: list[Path] = []
    shapes: list[tuple[int, int]] = []
    errors: list[tuple[Path, str]] = []
    shape = size
    for path in paths:
        p = Path(path)
        try:
            img, original = _load(p, size, max_pixels, allow_blank, resize)
            if shape is None:
                shape = img.shape
            elif img.shape != tuple(shape):
                raise ImageError(
                    p,
                    f"is {img.shape[0]}x{img.shape[1]} but the batch is {shape[0]}x{shape[1]}",
                    "give a size (--size) to resize all images",
                )
            imgs.append(img)
            ok.append(p)
            shapes.append(original)
        except ImageError as exc:
            errors.append((p, str(exc)))
        if progress is not None:
            progress(1)
    arr = np.stack(imgs) if imgs else np.empty((0, *(shape or (0, 0))))
    return LoadResult(arr, ok, errors, shapes)


def is_mvtec(root: str | os.PathLike) -> bool:
    """True if ``root`` looks like one MVTec AD category (train/good + test)."""
    r = Path(root)
    return (r / "train" / "good").is_dir() and (r / "test").is_dir()


@dataclass
class MVTecData:
    """One category of an MVTec-AD-style folder.

    Attributes
    ----------
    train : LoadResult
        ``train/good`` images.
    test : LoadResult
        ``test/*/`` images.
    test_types : list of str
        Defect type (folder name) of each loaded test image; ``"good"``
        for good parts.
    masks : ndarray of bool, shape (n_test, H, W)
        Ground-truth masks (all False for good parts or missing masks).
    has_masks : bool
        Whether any mask file was found.
    """

    train: LoadResult
    test: LoadResult
    test_types: list[str]
    masks: np.ndarray
    has_masks: bool

    @property
    def labels(self) -> np.ndarray:
        """1 for defective test images, 0 for good ones."""
        return np.array([t != "good" for t in self.test_types], dtype=int)


def load_mvtec(
    root: str | os.PathLike,
    size: int | Sequence[int] | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> MVTecData:
    """Load an MVTec-AD-style folder: ``train/good``, ``test/<type>``,
    ``ground_truth/<type>/<stem>_mask.png``.
    """
    r = Path(root)
    if not is_mvtec(r):
        raise FileNotFoundError(f"{r}: not an MVTec AD folder (needs train/good and test/)")
    train = load_images(find_images([r / "train" / "good"]), size, progress=progress)
    if size is None and train.images.size:
        size = train.images.shape[1:]
    test_files = find_images([r / "test"])
    test = load_images(test_files, size, progress=progress)
    types = [p.parent.name for p in test.paths]
    shape = test.images.shape[1:]
    masks = np.zeros((len(test.paths), *shape), dtype=bool)
    has = False
    for i, (p, t) in enumerate(zip(test.paths, types)):
        if t == "good":
            continue
        for cand in (
            r / "ground_truth" / t / f"{p.stem}_mask.png",
            r / "ground_truth" / t / f"{p.stem}.png",
        ):
            if cand.is_file():
                masks[i] = load_mask(cand, shape)
                has = True
                break
    return MVTecData(train=train, test=test, test_types=types, masks=masks, has_masks=has)
