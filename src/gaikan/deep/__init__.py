"""Deep-feature inspection (extra ``gaikan[deep]``: torch, timm).

Nothing heavy happens at import: names resolve lazily on first access, so
``import gaikan.deep`` is cheap and ``import gaikan`` never imports this
package.

- :func:`create_backbone`, :data:`BACKBONES`, :func:`backbone_config`
  (:mod:`gaikan.deep.backbones`): offline EfficientNet-Lite backbones.
- :class:`FeatureExtractor` (:mod:`gaikan.deep.features`): grey images →
  multi-layer feature maps (eager / channels_last / ONNX Runtime).
- :class:`PaDiM`, :class:`PatchCore`, :class:`SOARTDeep`: anomaly detectors
  with the same contract as :class:`gaikan.BaseDetector`.
- Classifiers (:mod:`gaikan.deep.classify`: :class:`Classifier`,
  :class:`ViTClassifier`, their seed ensembles :class:`ClassifierEnsemble`)
  and their explanations (:mod:`gaikan.deep.cam`).  The old module paths
  ``gaikan.deep.classifier``, ``gaikan.deep.vit`` and
  ``gaikan.deep.ensemble`` still import.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → module (relative to this package) that defines it.
_LAZY = {
    "BACKBONES": "backbones",
    "backbone_config": "backbones",
    "create_backbone": "backbones",
    "FeatureExtractor": "features",
    "PaDiM": "padim",
    "PatchCore": "patchcore",
    "SOARTDeep": "soart_deep",
    "Classifier": "classify.classifier",
    "ClassifierEnsemble": "classify.ensemble",
    "ViTClassifier": "classify.vit",
    "grad_cam": "cam",
}

__all__ = [
    "BACKBONES",
    "Classifier",
    "ClassifierEnsemble",
    "FeatureExtractor",
    "PaDiM",
    "PatchCore",
    "SOARTDeep",
    "ViTClassifier",
    "backbone_config",
    "create_backbone",
    "grad_cam",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gaikan.deep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
