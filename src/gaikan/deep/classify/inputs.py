"""What the classifier's network sees: image checks, encoding, windows, augmentation.

Images follow gaikan's convention: (n, H, W) grey or (n, H, W, 3) RGB on
the 0–255 scale.  :func:`check_X` validates them; an :class:`InputPipeline`
(built by the classifier from its parameters and fitted statistics) turns
them into the normalised network tensor (n, c, h, w) at ``image_size``:

1. raw channels in 0–1 (:meth:`InputPipeline.raw_channels`);
2. with ``reference=True``: (image, mean good image, 0.5 + difference)
   (:func:`with_reference`);
3. with ``focus=N``: the N×N window around the largest smoothed difference
   from the reference (:func:`focus_boxes`), cut out of every channel;
4. resized to ``image_size`` (bilinear, antialiased) and normalised by the
   backbone's mean and std.

Maps computed on the network input go back to the image with
:meth:`InputPipeline.to_input_maps` (pasted into the window in focus mode,
:func:`paste`).  :func:`augment` is the training-time augmentation on the
encoded batch; :func:`select_good_images` picks the images the reference
(and a SOART ViT's unit space) is the mean of.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._optional import require
from ...detectors.base import check_images
from ...errors import ParameterError

__all__ = [
    "Augmentation",
    "InputPipeline",
    "augment",
    "check_X",
    "focus_boxes",
    "paste",
    "plain_label",
    "raw_channels",
    "select_good_images",
    "with_reference",
]


def check_X(X: Any, name: str = "X") -> np.ndarray:
    """Validate images for a classifier: (n, H, W) grey or (n, H, W, 3) RGB.

    Grey batches are checked by :func:`gaikan.detectors.base.check_images`
    (the rule every gaikan estimator uses); an RGB batch is checked as the
    grey batch (n, H, 3W) its memory already is, so the two cannot drift.

    Returns
    -------
    ndarray, float32, shape (n, H, W) or (n, H, W, 3)

    Raises
    ------
    ParameterError
        Not numeric, wrong shape, empty, images of different shapes, NaN or
        infinite values; the message names ``name``.
    """
    try:
        arr = X
        if not isinstance(X, (list, tuple)) or len({np.shape(x) for x in X}) == 1:
            arr = np.asarray(X)  # a list of equal images (grey or RGB) is one batch
        if isinstance(arr, np.ndarray) and arr.ndim == 4 and arr.shape[-1] == 3:
            n, h, w, _ = arr.shape
            if n == 0:
                raise ParameterError(f"{name} is empty: shape {arr.shape}")
            flat = check_images(arr.reshape(n, h, w * 3), name, np.float32)
            return flat.reshape(arr.shape)
        if isinstance(arr, np.ndarray) and arr.ndim not in (2, 3):
            raise ParameterError(
                f"{name} must have shape (n, H, W) or (n, H, W, 3), got {arr.shape}"
            )
        return check_images(arr, name, np.float32)
    except ParameterError:
        raise
    except ValueError as exc:  # check_images' errors are ParameterErrors once it raises them
        raise ParameterError(str(exc)) from None


def plain_label(value: Any) -> Any:
    """A numpy scalar (``good_class=y[0]``) as the plain label ``classes_.tolist()`` holds."""
    return value.item() if hasattr(value, "item") else value


def select_good_images(
    X: np.ndarray,
    y_idx: np.ndarray,
    classes: np.ndarray,
    good_class: Any,
    *,
    required: bool,
    X_good: Any = None,
) -> np.ndarray:
    """The good training images: ``X_good`` when given, else the images of the good class.

    Parameters
    ----------
    X : ndarray, shape (n, H, W[, 3])
    y_idx : ndarray of int, shape (n,)
        Class index of each image in ``classes``.
    classes : ndarray, shape (k,)
    good_class : label or None
        The ``good_class`` parameter; None: a class named ``"good"`` if any.
    required : bool
        Refuse to fall back to all of X (a mean over defective parts is no
        reference for ``reference=True``).
    X_good : array-like, optional

    Returns
    -------
    ndarray, shape (m, H, W[, 3])
    """
    if X_good is not None:
        return check_X(X_good, "X_good")
    labels = classes.tolist()
    given = plain_label(good_class)
    if given is not None and given not in labels:
        raise ParameterError(f"good_class {given!r} is not among the classes {labels}")
    good = given if given is not None else ("good" if "good" in labels else None)
    if good is not None:
        return X[y_idx == labels.index(good)]
    if required:
        raise ParameterError(
            "reference=True needs good images: name their class with "
            "good_class= (CLI --good-class) or pass X_good= to fine_tune"
        )
    return X


def raw_channels(X: np.ndarray) -> np.ndarray:
    """(n, H, W[, 3]) 0–255 → (n, c, H, W) float32 in 0–1 (c = 1 or 3)."""
    if X.ndim == 3:
        return X[:, None] / 255.0
    return np.moveaxis(X, -1, 1) / 255.0


def with_reference(t: Any, reference: np.ndarray) -> Any:
    """(n, 1, H, W) grey tensor in 0–1 → (image, reference, 0.5 + difference), (n, 3, H, W)."""
    torch = require("torch", "deep")
    ref = torch.as_tensor(reference / 255.0, dtype=t.dtype, device=t.device)
    ref = ref.expand(t.shape[0], 1, *ref.shape)
    return torch.cat([t, ref, 0.5 + (t - ref)], 1)


def focus_boxes(X: np.ndarray, reference: np.ndarray, focus: int, sigma: float) -> np.ndarray:
    """Windows around the largest smoothed difference from the reference.

    Parameters
    ----------
    X : ndarray, shape (n, H, W)
    reference : ndarray, shape (H, W)
    focus : int
        Window side in image pixels (clipped to the image).
    sigma : float
        Gaussian smoothing of ``|X − reference|``, pixels.

    Returns
    -------
    ndarray of int, shape (n, 4)
        (r0, c0, h, w) of each window, inside the image.
    """
    from scipy.ndimage import gaussian_filter

    n, H, W = X.shape[:3]
    fh, fw = min(int(focus), H), min(int(focus), W)
    d = np.abs(X.astype(np.float32) - reference[None])
    d = gaussian_filter(d, sigma=(0, sigma, sigma), mode="nearest")
    r, c = np.unravel_index(d.reshape(n, -1).argmax(1), (H, W))
    r0 = np.clip(r - fh // 2, 0, H - fh)
    c0 = np.clip(c - fw // 2, 0, W - fw)
    return np.stack([r0, c0, np.full(n, fh), np.full(n, fw)], 1)


def paste(maps: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Window maps (n, h, w) back into zero frames (n, H, W), each rescaled to max 1."""
    torch = require("torch", "deep")
    out = np.zeros((len(maps), *hw))
    for i, (r0, c0, fh, fw) in enumerate(boxes):
        m = torch.as_tensor(maps[i][None, None], dtype=torch.float32)
        m = torch.nn.functional.interpolate(
            m, size=(int(fh), int(fw)), mode="bilinear", align_corners=False, antialias=True
        )[0, 0].numpy()
        hi = m.max()
        # scale again after resizing: downsampling can shave the maximum off
        out[i, r0 : r0 + fh, c0 : c0 + fw] = m / hi if hi > 0 else 0.0
    return out


@dataclass
class InputPipeline:
    """A fitted classifier's input transform: images → network tensor, maps → image.

    Attributes
    ----------
    size : (int, int)
        Network input (h, w).
    mean, std : list of float
        Per-channel normalisation (0–1 scale).
    reference : ndarray, shape (H, W), or None
        The mean good training image.
    compare : bool
        Feed (image, reference, difference) — the ``reference`` parameter.
    focus : int or None
        Window side, pixels (needs ``compare``).
    focus_sigma : float
    in_chans : int
        Channels the network takes (grey input is repeated to 3).
    channels_last : bool
        Hand the network channels-last tensors.
    """

    size: tuple[int, int]
    mean: list[float]
    std: list[float]
    reference: np.ndarray | None = None
    compare: bool = False
    focus: int | None = None
    focus_sigma: float = 5.0
    in_chans: int = 3
    channels_last: bool = True

    def raw_channels(self, X: np.ndarray) -> np.ndarray:
        """(n, H, W[, 3]) 0–255 → (n, c, H, W) float32 (c = 1 or 3)."""
        return raw_channels(X)

    def check(self, X: np.ndarray) -> None:
        """Refuse images this model cannot compare with its reference."""
        if self.compare and X.ndim != 3:
            raise ParameterError("this model compares grey images with a reference: pass (n, H, W)")
        ref = self.reference
        if self.compare and ref is not None and X.shape[1:] != ref.shape:
            raise ParameterError(
                f"images are {X.shape[1]}×{X.shape[2]} but this model compares them with a "
                f"{ref.shape[0]}×{ref.shape[1]} reference; crop/resize them as in training"
            )

    def focus_boxes(self, X: np.ndarray) -> np.ndarray | None:
        """(n, 4) focus windows of X, or None without ``focus``."""
        if not self.focus:
            return None
        assert self.reference is not None  # focus needs reference=True (checked in fit)
        return focus_boxes(X, self.reference, self.focus, self.focus_sigma)

    def _norm(self) -> tuple[Any, Any]:
        torch = require("torch", "deep")
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return mean, std

    def encode(self, X: np.ndarray, boxes: np.ndarray | None = None) -> Any:
        """Images (n, H, W[, 3]) → normalised network tensor (n, c, h, w) at ``size``.

        ``boxes``: focus windows of X when the caller already has them."""
        torch = require("torch", "deep")
        out = []
        mean, std = self._norm()
        self.check(X)
        for s in range(0, X.shape[0], 256):
            Xc = X[s : s + 256]
            t = torch.from_numpy(np.ascontiguousarray(self.raw_channels(Xc), np.float32))
            bc = self.focus_boxes(Xc) if boxes is None else boxes[s : s + 256]
            out.append(self.encode_tensor(t, mean, std, boxes=bc))
        return torch.cat(out)

    def encode_tensor(
        self, t: Any, mean: Any = None, std: Any = None, boxes: np.ndarray | None = None
    ) -> Any:
        """Raw channels (n, c, H, W) in 0–1 → normalised network input (differentiable)."""
        torch = require("torch", "deep")
        F = torch.nn.functional
        if mean is None:
            mean, std = self._norm()
        if self.compare:
            assert self.reference is not None
            t = with_reference(t, self.reference)
        if boxes is not None:
            t = torch.stack(
                [
                    t[i, :, r0 : r0 + fh, c0 : c0 + fw]
                    for i, (r0, c0, fh, fw) in enumerate(boxes.tolist())
                ]
            )
        if tuple(t.shape[-2:]) != self.size:
            t = F.interpolate(
                t, size=self.size, mode="bilinear", align_corners=False, antialias=True
            )
        c = t.shape[1]
        return (t - mean[:, :c].to(t.device)) / std[:, :c].to(t.device)

    def expand(self, xb: Any) -> Any:
        """Encoded batch → what the network takes (3 channels, memory format)."""
        xb = xb.expand(-1, 3, -1, -1) if xb.shape[1] == 1 and self.in_chans == 3 else xb
        if self.channels_last and xb.ndim == 4:
            torch = require("torch", "deep")
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def to_input_maps(
        self, maps: Any, hw: tuple[int, int], boxes: np.ndarray | None = None
    ) -> np.ndarray:
        """Maps (n, h, w) on the network input → (n, H, W) numpy maps on the image, in [0, 1]."""
        if boxes is not None:
            return paste(maps.cpu().numpy(), boxes, hw)
        from ..cam import normalize_maps, resize_maps

        # scale again after resizing: downsampling can shave the maximum off
        return normalize_maps(resize_maps(maps, tuple(hw))).cpu().numpy().astype(np.float64)


@dataclass
class Augmentation:
    """Training-time augmentation switches (the classifier's parameters of the same names)."""

    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    max_rotate: float = 0.0
    max_shift: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0


def augment(
    xb: Any,
    gen: Any,
    aug: Augmentation,
    mean: list[float],
    std: list[float],
    *,
    reference: bool = False,
) -> Any:
    """Randomly flip, rotate, shift and jitter an encoded batch (n, c, h, w).

    Parameters
    ----------
    xb : torch.Tensor, shape (n, c, h, w)
        Normalised network input (:meth:`InputPipeline.encode`).
    gen : torch.Generator
        The only randomness used.
    aug : Augmentation
    mean, std : list of float
        The normalisation of ``xb`` (photometric jitter works on the 0–1 scale).
    reference : bool
        ``xb`` holds (image, reference, difference): only the camera image
        is jittered and the difference is rebuilt from it.

    Returns
    -------
    torch.Tensor, shape (n, c, h, w)
    """
    torch = require("torch", "deep")
    F = torch.nn.functional
    n = xb.shape[0]

    def coin():
        return torch.rand(n, generator=gen) < 0.5

    if aug.hflip:
        m = coin()
        xb = torch.where(m.view(-1, 1, 1, 1), xb.flip(-1), xb)
    if aug.vflip:
        m = coin()
        xb = torch.where(m.view(-1, 1, 1, 1), xb.flip(-2), xb)
    if aug.rot90 and xb.shape[-1] == xb.shape[-2]:
        k = torch.randint(0, 4, (n,), generator=gen)
        xb = torch.stack([torch.rot90(x, int(kk), dims=(-2, -1)) for x, kk in zip(xb, k)])
    if aug.max_rotate > 0 or aug.max_shift > 0:
        ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(aug.max_rotate)
        sh = (torch.rand(n, 2, generator=gen) * 2 - 1) * 2 * aug.max_shift
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack(
            [torch.stack([cos, -sin, sh[:, 0]], 1), torch.stack([sin, cos, sh[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
        xb = F.grid_sample(xb, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if aug.contrast > 0 or aug.brightness > 0:
        c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * aug.contrast
        b = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * aug.brightness  # 0–1 scale
        if reference and xb.shape[1] == 3:
            # only the camera image varies: jitter channel 0, keep the stored
            # reference, rebuild the difference channel from the two
            m = torch.tensor(mean, dtype=xb.dtype).view(1, 3, 1, 1)
            sd = torch.tensor(std, dtype=xb.dtype).view(1, 3, 1, 1)
            raw = xb * sd + m
            img, ref = raw[:, :1], raw[:, 1:2]
            mu = img.mean(dim=(1, 2, 3), keepdim=True)
            img = (img - mu) * c + mu + b
            xb = (torch.cat([img, ref, 0.5 + img - ref], 1) - m) / sd
        else:
            b = b / float(np.mean(std))  # the tensor is normalised by std
            mu = xb.mean(dim=(1, 2, 3), keepdim=True)
            xb = (xb - mu) * c + mu + b
    return xb
