"""Defect classifiers, one concept per module.

=================  ==========================================================
module             what lives there
=================  ==========================================================
``classifier``     :class:`Classifier`, the estimator: parameters, ``fine_tune``
                   / ``predict_proba`` / ``predict`` / ``explain``, model files
``params``         the accepted value of every parameter (checked by ``fit``)
``inputs``         image checks, the input pipeline (reference channels, focus
                   windows, resizing, normalisation), augmentation
``training``       fastai's recipe: one-cycle schedules, discriminative rates,
                   layer groups, the epoch loop, the learning-rate finder
``network``        building the timm network, devices, torch threads and RNG
``explain``        Grad-CAM / LayerCAM / EigenCAM / rollout dispatch and
                   integrated gradients (the CAM maths is :mod:`gaikan.deep.cam`)
``ensemble``       :class:`ClassifierEnsemble`, seed ensembles
``vit``            :class:`ViTClassifier`, a small ViT on raw or SOART images
=================  ==========================================================

``gaikan.deep.classifier``, ``gaikan.deep.ensemble`` and ``gaikan.deep.vit``
re-export the public names for code (and model-file registries) written
before this package existed.  Importing it does not import torch.
"""

from __future__ import annotations

from .classifier import Classifier
from .ensemble import ClassifierEnsemble
from .training import (
    LRFindResult,
    cos_anneal,
    discriminative_lrs,
    one_cycle_schedule,
    stratified_split,
)
from .vit import ViTClassifier

__all__ = [
    "Classifier",
    "ClassifierEnsemble",
    "LRFindResult",
    "ViTClassifier",
    "cos_anneal",
    "discriminative_lrs",
    "one_cycle_schedule",
    "stratified_split",
]
