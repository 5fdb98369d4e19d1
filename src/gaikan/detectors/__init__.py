"""Training-free detectors with the scikit-learn outlier contract."""

from .base import BaseDetector, Detection, check_images
from .registry import REGISTRY, create, get_detector_class, load
from .rt import RTDetector
from .soart3map import SOART3Map
from .soartc import SOARTC
from .variants import VariantDetector

__all__ = [
    "REGISTRY",
    "SOARTC",
    "BaseDetector",
    "Detection",
    "RTDetector",
    "SOART3Map",
    "VariantDetector",
    "check_images",
    "create",
    "get_detector_class",
    "load",
]
