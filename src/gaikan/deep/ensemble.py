"""Compatibility module: seed ensembles live in :mod:`gaikan.deep.classify.ensemble`."""

from __future__ import annotations

from .classify.ensemble import ClassifierEnsemble

__all__ = ["ClassifierEnsemble"]
