"""What the station keeps of the images it inspected (``--keep``, age and size limits).

Records are never deleted by retention: only the image and overlay files
are, and the record then says when (``image_pruned_at``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ParameterError

__all__ = ["KEEP_CHOICES", "Retention", "parse_bytes"]

Keep = Literal["ng", "all", "none"]
#: ``ng``: images of parts judged defect or not inspectable (error); ``all``; ``none``.
KEEP_CHOICES = ("ng", "all", "none")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str | int | None) -> int | None:
    """``"500M"``, ``"2GB"``, ``"1.5g"``, ``123`` → bytes; None stays None."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ParameterError(f"{text!r} is not a size: use e.g. 500M, 2G or 1500000000")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class Retention:
    """The image retention policy.

    Attributes
    ----------
    keep : {"ng", "all", "none"}
        Which inspections keep their image and overlay.
    max_age_days : float or None
        Images older than this are removed.
    max_bytes : int or None
        The oldest images are removed while the images take more than this.
    """

    keep: Keep | str = "ng"
    max_age_days: float | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.keep not in KEEP_CHOICES:
            raise ParameterError(f"--keep {self.keep!r}: use one of {', '.join(KEEP_CHOICES)}")
        if self.max_age_days is not None and not self.max_age_days > 0:
            raise ParameterError(f"the age limit must be > 0 days, got {self.max_age_days!r}")
        if self.max_bytes is not None and self.max_bytes < 0:
            raise ParameterError(f"the size limit must be ≥ 0 bytes, got {self.max_bytes!r}")

    def keeps(self, verdict: str) -> bool:
        """Whether an inspection with this verdict keeps its image."""
        return self.keep == "all" or (self.keep == "ng" and verdict != "ok")

    @property
    def limited(self) -> bool:
        """Whether images are ever pruned."""
        return self.max_age_days is not None or self.max_bytes is not None
