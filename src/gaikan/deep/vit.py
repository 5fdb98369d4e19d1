"""Compatibility module: the ViT classifier lives in :mod:`gaikan.deep.classify.vit`."""

from __future__ import annotations

from .classify.vit import ViTClassifier

__all__ = ["ViTClassifier"]
