"""The classifier's network: building it, moving it, running it.

- :func:`create_network` builds a timm model with a new head for
  ``n_classes`` (offline weights only: a pretrained backbone must be one of
  gaikan's offline EfficientNet-Lites or come with ``weights_file``);
  :func:`rebuild_network` builds the same architecture empty, for a model
  file's weights.
- :func:`norm_stats` is the per-channel input normalisation the weights
  were trained with.
- :func:`to_device` and :func:`logits` place and run it;
  :class:`torch_context` sets torch's thread count and forks its RNG for a
  block (the global torch RNG is left untouched).

Nothing here imports torch or timm at module import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..._optional import require

__all__ = [
    "TIMM_NAMES",
    "create_network",
    "init_head",
    "logits",
    "norm_stats",
    "rebuild_network",
    "timm_name",
    "to_device",
    "torch_context",
]

#: gaikan backbone names → timm architecture (used when backbones.py is absent).
TIMM_NAMES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


def timm_name(backbone: str) -> str:
    """timm architecture of a gaikan backbone name (other names pass through)."""
    return TIMM_NAMES.get(backbone, backbone)


def _timm_kwargs(drop_rate: float, model_kwargs: dict | None) -> dict[str, Any]:
    kw = dict(model_kwargs or {})
    kw.setdefault("drop_rate", drop_rate)
    return kw


def create_network(
    backbone: str,
    n_classes: int,
    *,
    pretrained: bool,
    drop_rate: float,
    weights_file: str | None = None,
    model_kwargs: dict | None = None,
) -> tuple[Any, str, list[float], list[float]]:
    """Build the network with a fresh, small head.

    Returns
    -------
    model : torch.nn.Module
    arch : str
        timm architecture (what :func:`rebuild_network` needs).
    mean, std : list of float, length 3
        Input normalisation (:func:`norm_stats`).
    """
    timm = require("timm", "deep")
    kw = _timm_kwargs(drop_rate, model_kwargs)
    if pretrained:
        from ..backbones import create_backbone

        # never downloads: create_backbone refuses a name without offline weights
        model = create_backbone(
            backbone, pretrained=True, num_classes=n_classes, weights_file=weights_file, **kw
        )
    else:
        model = timm.create_model(
            timm_name(backbone), pretrained=False, num_classes=n_classes, **kw
        )
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or timm_name(backbone)
    init_head(model)
    mean, std = norm_stats(backbone, model)
    return model, arch, mean, std


def rebuild_network(arch: str, n_classes: int, drop_rate: float, model_kwargs: dict | None):
    """An untrained ``arch`` with ``n_classes`` outputs (weights come from a model file)."""
    timm = require("timm", "deep")
    kw = _timm_kwargs(drop_rate, model_kwargs)
    return timm.create_model(arch, pretrained=False, num_classes=n_classes, **kw)


def norm_stats(backbone: str, model: Any) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) on the 0–1 scale: the gaikan backbone's, else timm's, else ImageNet's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    try:
        from ..backbones import backbone_config

        bc = backbone_config(backbone)
        mean, std = bc["mean"], bc["std"]
    except Exception:  # noqa: BLE001 - not a gaikan backbone, or backbones.py absent
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
    mean = np.broadcast_to(np.asarray(mean, float), (3,))
    std = np.broadcast_to(np.asarray(std, float), (3,))
    return [float(v) for v in mean], [float(v) for v in std]


def init_head(model: Any) -> None:
    """Small initial head weights (std 0.01), zero bias.

    timm initialises EfficientNet's classifier uniformly in ±1/sqrt(fan_out),
    which for a handful of classes and 1280 features gives logits of std ~7
    and a huge initial loss; a small head starts at the uniform prediction.
    """
    import torch

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            head.weight.normal_(0.0, 0.01)
            if head.bias is not None:
                head.bias.zero_()


def to_device(model: Any, device: str, channels_last: bool) -> Any:
    """``model`` on ``device``, in channels-last memory format if asked."""
    if channels_last:
        torch = require("torch", "deep")
        model = model.to(memory_format=torch.channels_last)
    return model.to(device)


def logits(model: Any, x: Any, *, chunk: int, expand: Callable[[Any], Any], device: str) -> Any:
    """Eval-mode logits of the encoded batch ``x`` (n, c, h, w), ``chunk`` images at a time.

    Returns
    -------
    torch.Tensor, shape (n, n_classes), on the CPU
    """
    torch = require("torch", "deep")
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            out.append(model(expand(x[s : s + chunk]).to(device)).cpu())
    return torch.cat(out)


class torch_context:
    """Set torch threads and fork the RNG (seeded) for a block; restore after.

    Parameters
    ----------
    num_threads : int or None
        CPU threads for the block (None or 0: unchanged).
    seed : int or None
        Seed of the forked RNG (None: no fork).
    device : str
        A CUDA device's RNG is forked too.
    """

    def __init__(self, num_threads: int | None, seed: int | None, device: str) -> None:
        self.num_threads, self.seed, self.device = num_threads, seed, device

    def __enter__(self) -> torch_context:
        import torch

        self._old_threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        self._rng = None
        if self.seed is not None:
            devices = []
            if str(self.device).startswith("cuda") and torch.cuda.is_available():
                devices = [torch.device(self.device).index or 0]
            self._rng = torch.random.fork_rng(devices=devices)
            self._rng.__enter__()
            torch.manual_seed(int(self.seed))
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self._rng is not None:
            self._rng.__exit__(*exc)
        torch.set_num_threads(self._old_threads)
