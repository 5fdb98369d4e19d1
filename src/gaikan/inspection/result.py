"""The result of inspecting one image: one type for every kind of model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["CSV_COLUMNS", "Inspection", "Verdict"]

Verdict = Literal["ok", "defect", "error"]

#: Columns of ``results.csv``, the same for detectors and classifiers.
CSV_COLUMNS = (
    "file",
    "verdict",
    "score",
    "threshold",
    "map_max",
    "peak_row",
    "peak_col",
    "class",
    "confidence",
    "error",
    "folder_label",
    "overlay",
)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


@dataclass
class Inspection:
    """What became of one image.

    Attributes
    ----------
    file : str
        The file (or upload label) inspected.
    verdict : {"ok", "defect", "error"}
        Never blank: ``"error"`` when the image could not be inspected.
    score : float or None
        Higher = worse.  A detector's image score, or ``1 − P(good)`` for a
        classifier (see :mod:`gaikan.inspection.judge`).  None on error.
    threshold : float or None
        ``verdict == "defect"`` exactly when ``score > threshold``.
    error : str or None
        Why the image could not be inspected (names the file and the fix).
    label : str or None
        Ground truth from the folder name (``good`` or a defect folder).
    cls : str or None
        A classifier's predicted class.
    confidence : float or None
        Probability of ``cls``.
    probabilities : dict or None
        Every class's probability.
    map_max : float or None
        Maximum of the display map: equal to ``score`` by construction.
    map_mean : float or None
    peak_row, peak_col : int or None
        The display map's hottest pixel, in the original image's pixel
        coordinates.
    display : ndarray, shape (H, W), or None
        The calibrated display map at the model's input resolution
        (:func:`gaikan.inspection.display.calibrate`); not written to files.
    overlay : str or None
        Where the overlay picture was written (relative to the report).
    """

    file: str
    verdict: Verdict
    score: float | None = None
    threshold: float | None = None
    error: str | None = None
    label: str | None = None
    cls: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    map_max: float | None = None
    map_mean: float | None = None
    peak_row: int | None = None
    peak_col: int | None = None
    display: np.ndarray | None = field(default=None, repr=False, compare=False)
    overlay: str | None = None

    @classmethod
    def failed(cls, file: str, error: str, label: str | None = None) -> Inspection:
        """An image that could not be inspected."""
        return cls(file=file, verdict="error", error=error, label=label)

    @property
    def is_error(self) -> bool:
        return self.verdict == "error"

    def to_row(self) -> dict[str, str]:
        """One ``results.csv`` row (:data:`CSV_COLUMNS`)."""
        return {
            "file": self.file,
            "verdict": self.verdict,
            "score": _num(self.score),
            "threshold": _num(self.threshold),
            "map_max": _num(self.map_max),
            "peak_row": "" if self.peak_row is None else str(self.peak_row),
            "peak_col": "" if self.peak_col is None else str(self.peak_col),
            "class": self.cls or "",
            "confidence": _num(self.confidence),
            "error": self.error or "",
            "folder_label": self.label or "",
            "overlay": self.overlay or "",
        }

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-able data (the station's per-file answer)."""
        out: dict[str, Any] = {"file": self.file, "verdict": self.verdict}
        if self.is_error:
            out["error"] = self.error
            return out
        out.update(score=_finite(self.score), threshold=_finite(self.threshold))
        if self.cls is not None:
            out.update(
                {
                    "class": self.cls,
                    "confidence": self.confidence,
                    "probabilities": self.probabilities,
                }
            )
        if self.map_max is not None:
            out["map"] = {
                "max": self.map_max,
                "mean": self.map_mean,
                "peak": {"row": self.peak_row, "col": self.peak_col},
                "shape": None if self.display is None else list(self.display.shape),
            }
        return out


def _finite(v: float | None) -> float | str | None:
    if v is None or math.isfinite(v):
        return v
    return str(v)
