"""gaikan (外観): training-free visual inspection from a handful of good images.

The numpy-only public API.  Deep-learning detectors live in
:mod:`gaikan.deep` (extra ``gaikan[deep]``), the web service in
:mod:`gaikan.service` (extra ``gaikan[serve]``); neither is imported here.
"""

from __future__ import annotations

from ._params import clone
from ._version import __version__
from .detectors import (
    SOARTC,
    BaseDetector,
    Detection,
    RTDetector,
    SOART3Map,
    VariantDetector,
    create,
    load,
)
from .detectors.registry import model_family
from .errors import GaikanError, ImageError, ModelFileError, NotFittedError, ParameterError
from .patches import correlate2d, extract, fold
from .taguchi import MTUnitSpace, RTUnitSpace, soart3

__all__ = [
    "SOARTC",
    "BaseDetector",
    "Detection",
    "GaikanError",
    "ImageError",
    "MTUnitSpace",
    "ModelFileError",
    "NotFittedError",
    "ParameterError",
    "RTDetector",
    "RTUnitSpace",
    "SOART3Map",
    "VariantDetector",
    "__version__",
    "clone",
    "correlate2d",
    "create",
    "extract",
    "fold",
    "load",
    "model_family",
    "soart3",
]
