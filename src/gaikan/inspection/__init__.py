"""One inspection model for every face of gaikan (library, CLI, report, station).

- :class:`Inspection` (:mod:`.result`): what became of one image — score,
  threshold, verdict (``ok`` / ``defect`` / ``error``), class and
  probabilities for classifiers, error message, display map and its
  hottest point.
- :class:`Inspector` (:mod:`.judge`): any fitted model → inspections; the
  one place where scores and verdicts are defined.
- :mod:`.display`: the calibrated display map and the one colour policy.
- :func:`inspect_files`, :class:`ResultsCSV`, :class:`ResultsParquet`
  (:mod:`.batch`): files in batches, overlays, incremental ``results.csv``
  (and ``results.parquet``).

Torch-free: models that need torch bring it themselves.
"""

from __future__ import annotations

from .batch import (
    PARQUET_TYPES,
    ResultsCSV,
    ResultsParquet,
    folder_labeller,
    inspect_files,
    overlay_name,
)
from .display import calibrate, colour_bar_svg, legend, overlay_png, overlay_rgb
from .judge import CLASSIFIER_THRESHOLD, Inspector, model_family, to_original
from .result import CSV_COLUMNS, Inspection

__all__ = [
    "CLASSIFIER_THRESHOLD",
    "CSV_COLUMNS",
    "PARQUET_TYPES",
    "Inspection",
    "Inspector",
    "ResultsCSV",
    "ResultsParquet",
    "calibrate",
    "colour_bar_svg",
    "folder_labeller",
    "inspect_files",
    "legend",
    "model_family",
    "overlay_name",
    "overlay_png",
    "overlay_rgb",
    "to_original",
]
