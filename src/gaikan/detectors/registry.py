"""Registry of detector kinds: name → "module:Class", imported lazily.

Lazy import paths keep ``import gaikan`` free of torch while still letting
:func:`load` open a deep model file when the ``deep`` extra is installed.
"""

from __future__ import annotations

import importlib
import os

from ..errors import ModelFileError

__all__ = ["REGISTRY", "create", "get_detector_class", "load"]

#: kind → import path.  Add new detectors here (one line each).
REGISTRY: dict[str, str] = {
    "soartc": "gaikan.detectors.soartc:SOARTC",
    "soart3map": "gaikan.detectors.soart3map:SOART3Map",
    "rt": "gaikan.detectors.rt:RTDetector",
    "variants": "gaikan.detectors.variants:VariantDetector",
    "padim": "gaikan.deep.padim:PaDiM",
    "patchcore": "gaikan.deep.patchcore:PatchCore",
    "soart-deep": "gaikan.deep.soart_deep:SOARTDeep",
    # classifiers (not detectors, but model files of the same format)
    "classifier": "gaikan.deep.classifier:Classifier",
    "vit-classifier": "gaikan.deep.vit:ViTClassifier",
    "classifier-ensemble": "gaikan.deep.ensemble:ClassifierEnsemble",
}

#: Detectors that need the ``deep`` extra (torch, timm).
DEEP_KINDS = frozenset(
    {"padim", "patchcore", "soart-deep", "classifier", "vit-classifier", "classifier-ensemble"}
)


def get_detector_class(kind: str):
    """Class registered under ``kind``."""
    try:
        path = REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown detector {kind!r}; choose from {', '.join(REGISTRY)}") from None
    module, _, name = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if kind in DEEP_KINDS:
            raise ImportError(
                f"detector {kind!r} needs the deep extra: pip install 'gaikan[deep]' ({exc})"
            ) from exc
        raise
    return getattr(mod, name)


def create(kind: str, **params):
    """Instantiate the detector registered under ``kind``."""
    return get_detector_class(kind)(**params)


def load(path: str | os.PathLike):
    """Load any gaikan model file (detectors and classifiers).

    Raises
    ------
    gaikan.errors.ModelFileError
        If the file is not a valid, untampered gaikan model file.
    """
    from ..modelfile import read_model

    mf = read_model(path)
    try:
        cls = get_detector_class(mf.kind)
    except ValueError:
        raise ModelFileError(f"{path}: unknown model kind {mf.kind!r}") from None
    return cls.from_modelfile(mf)
