"""Compatibility module: the classifier lives in :mod:`gaikan.deep.classify`.

Model-file registries and user code import ``gaikan.deep.classifier``;
these are the names it has always offered.
"""

from __future__ import annotations

from .classify.classifier import Classifier
from .classify.network import TIMM_NAMES
from .classify.training import (
    LRFindResult,
    cos_anneal,
    discriminative_lrs,
    one_cycle_schedule,
    stratified_split,
)

__all__ = [
    "TIMM_NAMES",
    "Classifier",
    "LRFindResult",
    "cos_anneal",
    "discriminative_lrs",
    "one_cycle_schedule",
    "stratified_split",
]
