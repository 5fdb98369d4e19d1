"""A small Vision Transformer classifier on raw images or on SOART images.

The seed articles trained a ViT on "SOART images": the three-channel map
(log β, log η, log γ) of every patch against the unit-space mean image
(``SOART.md`` §4, :meth:`gaikan.SOART3Map.soart_image`).  Such an image is
already a per-patch comparison with the good part, so a tiny transformer
trained from scratch on it learns *which patch differs and how*.
:class:`ViTClassifier` does that (``input="soart"``) and, for comparison,
the same transformer on the raw grey image (``input="raw"``).

Sizes are chosen for two CPU cores: by default 64 tokens, width 96, depth
4, 3 heads (≈ 0.5 M parameters).  No pretrained ViT weights ship offline,
so the model trains from scratch; :meth:`fine_tune` still runs the fastai
recipe (set ``freeze_epochs=0`` to skip the head-only stage, which buys
little for a random body).

Explanations default to attention rollout (:func:`gaikan.deep.cam.attention_rollout`);
for SOART input the token map lives on the SOART patch grid and is spread
back to the image with :func:`gaikan.patches.fold`, so maps are always at
the input image resolution (:class:`ViTInputs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..._optional import require
from ...errors import ParameterError
from .classifier import Classifier
from .inputs import InputPipeline, select_good_images
from .params import as_hw, check_all, integer, one_of, real

__all__ = ["ViTClassifier", "ViTInputs", "vit_channels"]

#: ViT parameters beyond :data:`~gaikan.deep.classify.params.CLASSIFIER_RULES`.
VIT_RULES = {
    "input": one_of("raw", "soart"),
    "patch_size": integer(1),
    "embed_dim": integer(1),
    "depth": integer(1),
    "num_heads": integer(1),
    "mlp_ratio": real(0.0, lo_open=True),
    "soart_kernel": integer(1),
    "soart_stride": integer(1),
    "soart_norm": one_of("unit", "global"),
}


def vit_channels(
    X: np.ndarray, input: str, soart: Any = None, soart_norm: str = "unit"
) -> np.ndarray:
    """Network channels of a ViT before normalisation, (n, c, h, w) float32.

    ``input="raw"``: the grey image in 0–1 (colour converted, BT.601), c = 1.
    ``input="soart"``: the SOART image (log β, log η, log γ per patch) of
    the fitted :class:`gaikan.SOART3Map` ``soart``, c = 3, on its patch grid;
    ``soart_norm="unit"`` whitens each patch with the unit space's mean and
    covariance there and compresses with ``asinh``.
    """
    if input == "raw":
        if X.ndim == 4:  # colour → grey (BT.601), the model is single-channel
            X = X @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return X[:, None] / 255.0
    if X.ndim == 4:
        raise ParameterError("SOART input needs grey images (n, H, W)")
    f = soart.soart_image(X)  # (n, nh, nw, 3)
    if soart_norm == "unit":
        n, nh, nw, m = f.shape
        dev = f.reshape(n, nh * nw, m) - soart.mean_
        z = np.einsum("pij,npj->npi", soart.whiten_, dev)
        f = np.arcsinh(z).reshape(n, nh, nw, m)
    elif soart_norm != "global":
        raise ParameterError("soart_norm must be 'unit' or 'global'")
    return np.moveaxis(f.astype(np.float32), -1, 1)


@dataclass
class ViTInputs(InputPipeline):
    """A ViT's input pipeline: raw grey or SOART channels, no channel expansion.

    Token maps of SOART input are spread back to the image over the SOART
    patch grid (:func:`gaikan.patches.fold`).
    """

    input: str = "soart"
    soart: Any = None
    soart_norm: str = "unit"
    soart_kernel: int = 8
    soart_stride: int = 4

    def raw_channels(self, X: np.ndarray) -> np.ndarray:
        return vit_channels(X, self.input, self.soart, self.soart_norm)

    def encode(self, X: np.ndarray, boxes: np.ndarray | None = None) -> Any:
        t = super().encode(X, boxes)
        return t.clamp(-10, 10)  # SOART logs can be extreme; keep the tokens sane

    def expand(self, xb: Any) -> Any:
        return xb

    def to_input_maps(
        self, maps: Any, hw: tuple[int, int], boxes: np.ndarray | None = None
    ) -> np.ndarray:
        if self.input == "raw":
            return super().to_input_maps(maps, hw, boxes)
        from ...patches import fold
        from ..cam import resize_maps

        grid = self.soart.grid_shape_
        g = resize_maps(maps, grid).cpu().numpy().astype(np.float64)
        out = fold(g, (int(hw[0]), int(hw[1])), self.soart_kernel, self.soart_stride)
        hi = out.reshape(len(out), -1).max(1)
        return out / np.where(hi > 0, hi, 1.0)[:, None, None]


class ViTClassifier(Classifier):
    """Vision Transformer classifier (timm ``VisionTransformer``), from scratch.

    Parameters
    ----------
    input : {"raw", "soart"}, default "soart"
        Network input: the grey image, or its SOART3 image against the mean
        of the good training images.
    image_size : int, default 64
        Network input side (the SOART image is resized to it).
    patch_size : int, default 8
    embed_dim, depth, num_heads : int, default 96, 4, 3
    mlp_ratio : float, default 2.0
    soart_kernel, soart_stride : int, default 8, 4
        Patch grid of the SOART image (on the input image).
    soart_norm : {"unit", "global"}, default "unit"
        ``"unit"``: each patch's (log β, log η, log γ) is whitened with the
        unit space's mean and covariance *at that patch* (the vector whose
        squared norm is the MT distance of :class:`gaikan.SOART3Map`), then
        compressed with ``asinh``; a good part gives ≈ noise everywhere and
        a defect stands out wherever it is.  ``"global"``: the raw SOART
        image, standardised per channel over all patches.
    good_class : label or None
        Class whose training images form the SOART unit space; default
        ``"good"`` when present, else all training images.
    **kwargs
        Any :class:`Classifier` parameter (``batch_size``, ``valid_frac``,
        ``patience``, augmentation, ``random_state``, …).
    """

    kind: ClassVar[str] = "vit-classifier"
    _channels_last: ClassVar[bool] = False
    methods: ClassVar[tuple[str, ...]] = ("rollout", "gradcam", "layercam", "eigencam")
    default_method: ClassVar[str] = "rollout"

    def __init__(
        self,
        input: str = "soart",
        *,
        image_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 96,
        depth: int = 4,
        num_heads: int = 3,
        mlp_ratio: float = 2.0,
        soart_kernel: int = 8,
        soart_stride: int = 4,
        soart_norm: str = "unit",
        good_class: Any = None,
        batch_size: int = 32,
        valid_frac: float = 0.2,
        patience: int | None = 5,
        weight_decay: float = 0.05,
        hflip: bool = False,
        vflip: bool = False,
        rot90: bool = False,
        max_rotate: float = 0.0,
        max_shift: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        drop_rate: float = 0.1,
        n_groups: int = 3,
        label_smoothing: float = 0.0,
        random_state: int = 0,
        num_threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(
            backbone="vit",
            pretrained=False,
            image_size=image_size,
            batch_size=batch_size,
            valid_frac=valid_frac,
            patience=patience,
            weight_decay=weight_decay,
            hflip=hflip,
            vflip=vflip,
            rot90=rot90,
            max_rotate=max_rotate,
            max_shift=max_shift,
            brightness=brightness,
            contrast=contrast,
            drop_rate=drop_rate,
            n_groups=n_groups,
            label_smoothing=label_smoothing,
            good_class=good_class,
            random_state=random_state,
            num_threads=num_threads,
            device=device,
        )
        del self.backbone, self.pretrained, self.weights_file, self.model_kwargs
        self.input = input
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.soart_kernel = soart_kernel
        self.soart_stride = soart_stride
        self.soart_norm = soart_norm

    # Classifier reads these; a ViT has no pretrained backbone.
    backbone = "vit"
    pretrained = False
    weights_file = None
    model_kwargs = None

    def _check_params(self) -> None:
        super()._check_params()
        check_all(VIT_RULES, self.get_params())
        if self.embed_dim % self.num_heads:
            raise ParameterError(
                f"embed_dim ({self.embed_dim}) must be a multiple of num_heads ({self.num_heads})"
            )

    # -- model ----------------------------------------------------------------
    def _in_chans(self) -> int:
        return 3 if self.input == "soart" else 1

    def _build(self, n_classes: int):
        require("timm", "deep")
        from timm.models.vision_transformer import VisionTransformer

        if self.input not in ("raw", "soart"):
            raise ParameterError("input must be 'raw' or 'soart'")
        return VisionTransformer(
            img_size=as_hw("image_size", self.image_size),
            patch_size=self.patch_size,
            in_chans=self._in_chans(),
            num_classes=n_classes,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            drop_rate=self.drop_rate,
            class_token=True,
            global_pool="token",
        )

    def _create_model(self, n_classes: int):
        model = self._build(n_classes)
        c = self._in_chans()
        return model, "vit-custom", [0.0] * c, [1.0] * c

    def _rebuild(self, arch: str, n_classes: int):
        return self._build(n_classes)

    # -- input ----------------------------------------------------------------
    def _fit_input(self, X: np.ndarray, y_idx: np.ndarray, X_good: Any = None) -> None:
        """Fit the SOART unit space, then per-channel input statistics."""
        self.soart_ = None
        if self.input == "soart":
            from ...detectors.soart3map import SOART3Map

            if X.ndim == 4:
                raise ParameterError("SOART input needs grey images (n, H, W)")
            Xg = select_good_images(
                X, y_idx, self.classes_, self.good_class, required=False, X_good=X_good
            )
            self.soart_ = SOART3Map(kernel=self.soart_kernel, stride=self.soart_stride).fit(Xg)
        self.reference_ = None  # no integrated gradients for a ViT
        # standardise on the training set (a from-scratch ViT has no preset)
        sample = self._channels(X[: min(len(X), 512)]).astype(np.float64)
        mean = sample.mean(axis=(0, 2, 3))
        std = sample.std(axis=(0, 2, 3)) + 1e-6
        self.input_mean_ = [float(v) for v in mean]
        self.input_std_ = [float(v) for v in std]

    def _channels(self, X: np.ndarray) -> np.ndarray:
        return vit_channels(X, self.input, self.soart_, self.soart_norm)

    def input_pipeline(self) -> ViTInputs:
        """What the network sees (:class:`ViTInputs`); see :meth:`Classifier.input_pipeline`."""
        self._check_fitted()
        return ViTInputs(
            size=as_hw("image_size", self.image_size),
            mean=self.input_mean_,
            std=self.input_std_,
            in_chans=self.in_chans_,
            channels_last=self._channels_last,
            input=self.input,
            soart=self.soart_,
            soart_norm=self.soart_norm,
            soart_kernel=self.soart_kernel,
            soart_stride=self.soart_stride,
        )

    # -- explanations --------------------------------------------------------
    def explain(
        self, X: Any, method: str | None = None, target: Any = None, layer: str | None = None
    ) -> np.ndarray:
        """Relevance maps (n, H, W) at X's resolution; default attention rollout."""
        return super().explain(X, method=method or self.default_method, target=target, layer=layer)

    # -- model files ----------------------------------------------------------
    def _extra_state(self):
        if self.input != "soart":
            return {}, {}
        mf = self.soart_.to_modelfile()
        arrays = {f"soart.{k}": v for k, v in mf.arrays.items()}
        return arrays, {"soart_params": mf.params, "soart_meta": mf.meta}

    def _set_extra_state(self, arrays, meta) -> None:
        self.reference_ = None
        self.soart_ = None
        if self.input != "soart":
            return
        from ...detectors.soart3map import SOART3Map
        from ...modelfile import ModelFile

        sub = {k[len("soart.") :]: v for k, v in arrays.items() if k.startswith("soart.")}
        self.soart_ = SOART3Map.from_modelfile(
            ModelFile(
                kind="soart3map", params=meta["soart_params"], meta=meta["soart_meta"], arrays=sub
            )
        )
