"""Shewhart control limits for image scores, from the unit space's leave-one-out scores.

The history page draws an individuals chart of the recorded image scores in
time order.  Its centre line and ±3σ limits come from the scores the model
gave its own good training images with each image left out of the fit
(``train_scores_``, the same numbers its threshold is a quantile of): they
describe how a good part scores, so a run of new parts drifting away from
that band shows before the parts cross the threshold.

The training images have no time order, so σ is the sample standard
deviation (``ddof=1``) rather than the moving-range estimate of a
time-ordered individuals chart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["ControlLimits", "control_limits"]

#: Width of the control band in standard deviations.
K_SIGMA = 3.0


@dataclass(frozen=True)
class ControlLimits:
    """Centre line, σ and control limits of an individuals chart of image scores.

    Attributes
    ----------
    centre : float
        Mean of the leave-one-out scores.
    sigma : float
        Their sample standard deviation (``ddof=1``).
    ucl, lcl : float
        ``centre ± k·sigma`` (``k`` = 3).
    threshold : float or None
        The model's verdict threshold (drawn as its own line).
    n : int
        Finite scores used.
    k : float
        Width of the band in σ.
    """

    centre: float
    sigma: float
    ucl: float
    lcl: float
    threshold: float | None
    n: int
    k: float = K_SIGMA

    def to_json(self) -> dict[str, Any]:
        """JSON-able data."""
        return asdict(self)


def control_limits(
    scores: Any, threshold: float | None = None, *, k: float = K_SIGMA
) -> ControlLimits:
    """Control limits from leave-one-out scores of good images.

    Parameters
    ----------
    scores : array_like, shape (n,)
        The unit space's leave-one-out image scores (non-finite ones are
        ignored).
    threshold : float, optional
        The model's threshold, passed through.
    k : float
        Width of the band in standard deviations (3: Shewhart's limits).

    Returns
    -------
    ControlLimits

    Raises
    ------
    gaikan.errors.ParameterError
        Fewer than two finite scores, or ``k`` not positive.
    """
    if not (np.isfinite(k) and k > 0):
        raise ParameterError(f"k must be a positive number of standard deviations, got {k!r}")
    arr = np.asarray(scores, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size < 2:
        raise ParameterError(
            f"control limits need at least 2 finite leave-one-out scores, got {arr.size}: "
            "fit the model on more good images"
        )
    centre = float(arr.mean())
    sigma = float(arr.std(ddof=1))
    thr = None if threshold is None or not np.isfinite(threshold) else float(threshold)
    return ControlLimits(
        centre=centre,
        sigma=sigma,
        ucl=centre + k * sigma,
        lcl=centre - k * sigma,
        threshold=thr,
        n=int(arr.size),
        k=float(k),
    )
