"""Training-free detectors with the scikit-learn outlier contract."""

from .base import BaseDetector, Detection, GridDetector, check_images
from .registry import (
    DEEP_KINDS,
    KINDS,
    REGISTRY,
    ModelKind,
    create,
    default_size,
    get_detector_class,
    load,
    model_family,
)
from .rt import RTDetector
from .soart3map import SOART3Map
from .soartc import SOARTC
from .variants import VariantDetector

__all__ = [
    "DEEP_KINDS",
    "KINDS",
    "REGISTRY",
    "SOARTC",
    "BaseDetector",
    "Detection",
    "GridDetector",
    "ModelKind",
    "RTDetector",
    "SOART3Map",
    "VariantDetector",
    "check_images",
    "create",
    "default_size",
    "get_detector_class",
    "load",
    "model_family",
]
