"""Parameter checks for the classifiers, run by ``fit`` (scikit-learn style).

Each check takes the parameter's name and value and raises
:class:`gaikan.errors.ParameterError` naming the parameter and what it
accepts.  Estimators list their rules as ``{name: check}``
(:data:`CLASSIFIER_RULES`), so a newcomer reads every accepted value in one
table.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import ParameterError

__all__ = [
    "CLASSIFIER_RULES",
    "FIT_RULES",
    "as_hw",
    "check_all",
    "flag",
    "integer",
    "one_of",
    "real",
]

Check = Callable[[str, Any], None]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def integer(lo: int | None = None, *, none: bool = False) -> Check:
    """An integer ≥ ``lo`` (or None when ``none``)."""

    def check(name: str, v: Any) -> None:
        if v is None and none:
            return
        if not _is_int(v) or (lo is not None and v < lo):
            what = "an integer" + (f" >= {lo}" if lo is not None else "")
            raise ParameterError(f"{name} must be {what}{' or None' if none else ''}, got {v!r}")

    return check


def real(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    none: bool = False,
) -> Check:
    """A finite number in the interval [lo, hi] (ends open when asked)."""

    def check(name: str, v: Any) -> None:
        if v is None and none:
            return
        ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
        ok = ok and math.isfinite(float(v))
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
            raise ParameterError(
                f"{name} must be a finite number in {span}{' or None' if none else ''}, got {v!r}"
            )

    return check


def flag(name: str, v: Any) -> None:
    """True or False."""
    if not isinstance(v, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {v!r}")


def one_of(*choices: Any) -> Check:
    """One of ``choices``."""

    def check(name: str, v: Any) -> None:
        if not any(v == c and type(v) is type(c) for c in choices):
            raise ParameterError(
                f"{name} must be one of {', '.join(map(repr, choices))}; got {v!r}"
            )

    return check


def text(*, none: bool = False) -> Check:
    """A non-empty string (or None when ``none``)."""

    def check(name: str, v: Any) -> None:
        if v is None and none:
            return
        if not isinstance(v, str) or not v:
            raise ParameterError(
                f"{name} must be a non-empty string{' or None' if none else ''}, got {v!r}"
            )

    return check


def path_or_none(name: str, v: Any) -> None:
    """A file path (str or os.PathLike) or None."""
    if v is not None and not isinstance(v, (str, os.PathLike)):
        raise ParameterError(f"{name} must be a file path or None, got {v!r}")


def dict_or_none(name: str, v: Any) -> None:
    """A dict of keyword arguments or None."""
    if v is not None and not isinstance(v, Mapping):
        raise ParameterError(f"{name} must be a dict or None, got {v!r}")


def as_hw(name: str, size: Any) -> tuple[int, int]:
    """``image_size``: an int (square) or (h, w) of positive ints → (h, w)
    (:func:`gaikan._validation.as_hw`, the one size normaliser)."""
    from ..._validation import as_hw as _as_hw

    return _as_hw(size, name)


def _image_size(name: str, v: Any) -> None:
    as_hw(name, v)


def _device(name: str, v: Any) -> None:
    if isinstance(v, str) and v:
        return
    if type(v).__name__ == "device" and hasattr(v, "type"):  # a torch.device
        return
    raise ParameterError(f"{name} must be a device name such as 'cpu' or 'cuda:0', got {v!r}")


def _focus(name: str, v: Any) -> None:
    if v is not None and (not _is_int(v) or v < 8):
        raise ParameterError(
            f"focus needs reference=True and a window of at least 8 pixels; got {name}={v!r}"
        )


#: Every constructor parameter of :class:`~gaikan.deep.classify.Classifier` and its rule
#: (``cam_method`` is checked against the class's ``methods``).
CLASSIFIER_RULES: dict[str, Check] = {
    "backbone": text(),
    "pretrained": flag,
    "image_size": _image_size,
    "batch_size": integer(1),
    "valid_frac": real(0.0, 1.0, hi_open=True),
    "patience": integer(0, none=True),
    "weight_decay": real(0.0),
    "hflip": flag,
    "vflip": flag,
    "rot90": flag,
    "max_rotate": real(0.0, 180.0),
    "max_shift": real(0.0, 1.0),
    "brightness": real(0.0),
    "contrast": real(0.0),
    "drop_rate": real(0.0, 1.0, hi_open=True),
    "n_groups": integer(1),
    "label_smoothing": real(0.0, 1.0, hi_open=True),
    "precise_bn": integer(0),
    "reference": flag,
    "focus": _focus,
    "focus_sigma": real(0.0),
    "cam_layer": text(none=True),
    "random_state": integer(),
    "num_threads": integer(0, none=True),
    "device": _device,
    "weights_file": path_or_none,
    "model_kwargs": dict_or_none,
}

#: Arguments of ``fine_tune`` and their rules.
FIT_RULES: dict[str, Check] = {
    "epochs": integer(0),
    "freeze_epochs": integer(0),
    "base_lr": real(0.0, lo_open=True),
    "lr_mult": real(0.0, lo_open=True, none=True),
    "pct_start": real(0.0, 1.0, lo_open=True),
    "div": real(0.0, lo_open=True),
}


def check_all(rules: Mapping[str, Check], values: Mapping[str, Any]) -> None:
    """Apply ``rules`` to the values they name (names without a value are skipped)."""
    for name, check in rules.items():
        if name in values:
            check(name, values[name])
