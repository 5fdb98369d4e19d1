"""The one registry of model kinds: name → class, family, extra, default size.

Every kind a model file can hold is one :class:`ModelKind` row of
:data:`KINDS`; everything else is derived from it: :data:`REGISTRY` (name →
import path), :data:`DEEP_KINDS`, :func:`default_size` (the image size the
CLI loads images at when ``--size`` is not given), :func:`model_family`,
and the ``kind`` class attribute of every registered detector (set by
:class:`gaikan.BaseDetector` from this table; classifiers' own ``kind`` is
checked against it by ``tests/test_contract.py``).

Classes are imported lazily from their path, which keeps ``import gaikan``
free of torch while still letting :func:`load` open a deep model file when
the ``deep`` extra is installed.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ModelFileError, ParameterError

__all__ = [
    "DEEP_KINDS",
    "KINDS",
    "REGISTRY",
    "ModelKind",
    "create",
    "default_size",
    "get_detector_class",
    "kind_of_class_path",
    "load",
    "model_family",
]

Family = Literal["detector", "classifier"]


@dataclass(frozen=True)
class ModelKind:
    """One registered model kind.

    Attributes
    ----------
    name : str
        Registry name, written into model files (``kind``).
    import_path : str
        ``"module:Class"``, imported on first use.
    family : {"detector", "classifier"}
        Anomaly detector (fits on good images, scores and maps) or
        classifier (trains on labelled images, predicts classes).
    extra : {"core", "deep"}
        The pip extra the class needs (``deep``: torch and timm).
    default_size : int
        Square side images are loaded at when no size is given (the CLI's
        ``--size`` default): 100 for pixel detectors (the spec's geometry
        k = 10, s = 5), 256 for deep detectors, 128 for classifiers.
    """

    name: str
    import_path: str
    family: Family
    extra: Literal["core", "deep"]
    default_size: int


#: Every model kind.  Add new ones here (one line each).
KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("soartc", "gaikan.detectors.soartc:SOARTC", "detector", "core", 100),
        ModelKind("soart3map", "gaikan.detectors.soart3map:SOART3Map", "detector", "core", 100),
        ModelKind("rt", "gaikan.detectors.rt:RTDetector", "detector", "core", 100),
        ModelKind("variants", "gaikan.detectors.variants:VariantDetector", "detector", "core", 100),
        ModelKind("tiled", "gaikan.detectors.tiled:TiledDetector", "detector", "core", 100),
        ModelKind("padim", "gaikan.deep.padim:PaDiM", "detector", "deep", 256),
        ModelKind("patchcore", "gaikan.deep.patchcore:PatchCore", "detector", "deep", 256),
        ModelKind("soart-deep", "gaikan.deep.soart_deep:SOARTDeep", "detector", "deep", 256),
        # a deep detector exported to ONNX: numpy + onnxruntime, no torch (gaikan[runtime])
        ModelKind(
            "onnx-detector", "gaikan.runtime.onnx_detector:OnnxDetector", "detector", "core", 256
        ),
        ModelKind(
            "classifier", "gaikan.deep.classify.classifier:Classifier", "classifier", "deep", 128
        ),
        # a classifier or ensemble exported to ONNX / OpenVINO: no torch (gaikan[runtime])
        ModelKind(
            "onnx-classifier",
            "gaikan.runtime.onnx_classifier:OnnxClassifier",
            "classifier",
            "core",
            128,
        ),
        ModelKind(
            "vit-classifier", "gaikan.deep.classify.vit:ViTClassifier", "classifier", "deep", 128
        ),
        ModelKind(
            "classifier-ensemble",
            "gaikan.deep.classify.ensemble:ClassifierEnsemble",
            "classifier",
            "deep",
            128,
        ),
    )
}

#: kind → import path (derived from :data:`KINDS`).
REGISTRY: dict[str, str] = {k.name: k.import_path for k in KINDS.values()}

#: Kinds that need the ``deep`` extra (torch, timm) (derived from :data:`KINDS`).
DEEP_KINDS = frozenset(k.name for k in KINDS.values() if k.extra == "deep")

_BY_PATH = {k.import_path: k.name for k in KINDS.values()}


def kind_of_class_path(path: str) -> str:
    """Registry name of the class at ``"module:Class"``, or "" if unregistered."""
    return _BY_PATH.get(path, "")


def _kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"unknown detector {name!r}; choose from {', '.join(KINDS)}") from None


def default_size(kind: str) -> tuple[int, int]:
    """(H, W) images of ``kind`` are loaded at when no size is given."""
    s = _kind(kind).default_size
    return s, s


def get_detector_class(kind: str) -> type:
    """Class registered under ``kind`` (detector or classifier), imported now.

    Raises
    ------
    gaikan.errors.ParameterError
        Unknown kind (the message lists the registered ones).
    ImportError
        A deep kind without the ``deep`` extra installed (the message says
        what to install).
    """
    spec = _kind(kind)
    module, _, name = spec.import_path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if spec.extra == "deep":
            raise ImportError(
                f"detector {kind!r} needs the deep extra: pip install 'gaikan[deep]' ({exc})"
            ) from exc
        raise
    return getattr(mod, name)


def model_family(model_or_kind: Any) -> Family:
    """``"detector"`` or ``"classifier"`` for a kind name, a model class or a model.

    Answered from the registry (by the class's registered ``kind``), or
    from the class hierarchy for detectors that are not registered
    (subclasses of :class:`gaikan.BaseDetector`); never by probing for
    methods.

    Raises
    ------
    gaikan.errors.ParameterError
        Neither a registered kind nor a gaikan model.
    """
    if isinstance(model_or_kind, str):
        return _kind(model_or_kind).family
    cls = model_or_kind if isinstance(model_or_kind, type) else type(model_or_kind)
    kind = cls.__dict__.get("kind") or getattr(cls, "kind", None)
    if isinstance(kind, str) and kind in KINDS:
        return KINDS[kind].family
    from .base import BaseDetector

    if issubclass(cls, BaseDetector):
        return "detector"
    raise ParameterError(
        f"{cls.__name__} is not a gaikan model: expected a detector or classifier "
        f"of a registered kind ({', '.join(KINDS)})"
    )


def create(kind: str, **params: Any) -> Any:
    """Instantiate the model registered under ``kind``."""
    return get_detector_class(kind)(**params)


def load(path: str | os.PathLike) -> Any:
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
    except ParameterError:
        raise ModelFileError(f"{path}: unknown model kind {mf.kind!r}") from None
    from ..geometry import apply_meta

    return apply_meta(cls.from_modelfile(mf), mf.meta, path)  # type: ignore[attr-defined]
