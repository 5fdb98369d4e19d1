"""Pure array maths of the Taguchi family: RT, MT, SOART3, SOARTC."""

from .moments import Moments, merge_all
from .mt import (
    MTUnitSpace,
    fit_gaussians,
    gaussians_from_moments,
    loo_mahalanobis,
    loo_mahalanobis_from,
    mahalanobis,
)
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
    "Moments",
    "RTUnitSpace",
    "fit_gaussians",
    "gaussians_from_moments",
    "loo_mahalanobis",
    "loo_mahalanobis_from",
    "mahalanobis",
    "mean_self_similarity",
    "merge_all",
    "rt_features",
    "self_similarity",
    "soart3",
    "soart3_map",
    "soartc_features",
]
