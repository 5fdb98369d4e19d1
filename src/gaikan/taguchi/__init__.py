"""Pure array maths of the Taguchi family: RT, MT, SOART3, SOARTC."""

from .mt import MTUnitSpace, fit_gaussians, loo_mahalanobis, mahalanobis
from .rt import RTUnitSpace, rt_features
from .soart import (
    BETA_FLOOR,
    EPS,
    mean_self_similarity,
    self_similarity,
    soart3,
    soart3_map,
    soartc_features,
)

__all__ = [
    "BETA_FLOOR",
    "EPS",
    "MTUnitSpace",
    "RTUnitSpace",
    "fit_gaussians",
    "loo_mahalanobis",
    "mahalanobis",
    "mean_self_similarity",
    "rt_features",
    "self_similarity",
    "soart3",
    "soart3_map",
    "soartc_features",
]
