"""Input and parameter validation shared by every estimator.

The one place for: the image-batch check (:func:`check_images`), the
fitted check (:func:`check_is_fitted`), the image-size normaliser
(:func:`as_hw`) and the declarative parameter checks run by ``fit``
(:class:`Interval`, :class:`OneOf`, :class:`Check`, :func:`validate_params`),
modelled on scikit-learn's ``utils.validation`` and ``_param_validation``.
Every failure is a :class:`gaikan.errors.ParameterError` (or
:class:`~gaikan.errors.NotFittedError`) whose message names the parameter
and the accepted values.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import NotFittedError, ParameterError

__all__ = [
    "Check",
    "Interval",
    "OneOf",
    "as_hw",
    "check_images",
    "check_is_fitted",
    "validate_params",
]


def check_images(X: Any, name: str = "X", dtype: type = np.float64) -> np.ndarray:
    """Validate a batch of grey images and return it as ``dtype``.

    Parameters
    ----------
    X : array-like, shape (n, H, W), or a list of n (H, W) arrays
    name : str
        Name used in messages.
    dtype : numpy dtype

    Returns
    -------
    ndarray, shape (n, H, W)

    Raises
    ------
    gaikan.errors.ParameterError
        Empty input, wrong number of dimensions, images of different
        shapes, a non-numeric array, or non-finite values.
    """
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ParameterError(f"{name} is empty: no images given")
        shapes = {np.shape(x) for x in X}
        if len(shapes) > 1:
            raise ParameterError(
                f"{name} holds images of different shapes {sorted(shapes)}; "
                "resize them to one size first (gaikan.io.load_images(..., size=...))"
            )
    arr = np.asarray(X)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ParameterError(f"{name} must be a numeric array of images, got dtype {arr.dtype}")
    if arr.ndim != 3:
        hint = " (for one image pass X[None])" if arr.ndim == 2 else ""
        raise ParameterError(f"{name} must have shape (n, H, W), got {arr.shape}{hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ParameterError(f"{name} is empty: shape {arr.shape}")
    arr = arr.astype(dtype, copy=False)
    if not np.isfinite(arr).all():
        raise ParameterError(f"{name} contains NaN or infinite values")
    return arr


def check_is_fitted(estimator: Any, attrs: str | Iterable[str]) -> None:
    """Raise :class:`~gaikan.errors.NotFittedError` unless ``estimator`` has ``attrs``.

    Parameters
    ----------
    estimator : object
    attrs : str or iterable of str
        Fitted attributes (trailing underscore) that ``fit`` sets.
    """
    names = [attrs] if isinstance(attrs, str) else list(attrs)
    if not all(hasattr(estimator, a) for a in names):
        raise NotFittedError(
            f"this {type(estimator).__name__} is not fitted yet; call fit first "
            "(or load a fitted model with gaikan.load)"
        )


_HW = re.compile(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?")


def as_hw(size: Any, name: str = "size") -> tuple[int, int]:
    """The one image-size normaliser: ``128`` / ``(h, w)`` / ``"HxW"`` → ``(h, w)``.

    Parameters
    ----------
    size : int, sequence of two ints, or str
        ``"96x128"`` is height 96, width 128; ``"128"`` is square.

    Returns
    -------
    (int, int)

    Raises
    ------
    gaikan.errors.ParameterError
        Anything else, or a side < 1.
    """
    h: Any
    w: Any
    if isinstance(size, str):
        m = _HW.fullmatch(size)
        if not m:
            raise ParameterError(f"{name} {size!r} is not a size: use 128, (96, 128) or '96x128'")
        h, w = int(m.group(1)), int(m.group(2) or m.group(1))
    elif isinstance(size, (bool, np.bool_)):
        raise ParameterError(f"{name} must be an int, (height, width) or 'HxW', got {size!r}")
    elif isinstance(size, numbers.Integral):
        h = w = int(size)
    else:
        try:
            h, w = size
        except (TypeError, ValueError):
            raise ParameterError(
                f"{name} must be an int, (height, width) or 'HxW', got {size!r}"
            ) from None
        if not all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in (h, w)
        ):
            raise ParameterError(f"{name} must hold two integers, got {size!r}")
        h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise ParameterError(f"{name} must be positive, got {size!r}")
    return h, w


# -- declarative parameter checks ------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class Interval:
    """A number in an interval.

    Parameters
    ----------
    kind : {"int", "real"}
        ``"int"`` accepts integers only; ``"real"`` any finite real.
    low, high : float or None
        Bounds (None: unbounded).
    closed : {"both", "left", "right", "neither"}
    none_ok : bool
        Whether None is accepted.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    none_ok: bool = False

    def describe(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        what = "an integer" if self.kind == "int" else "a finite number"
        return f"{what} in {left}{lo}, {hi}{right}" + (" or None" if self.none_ok else "")

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.none_ok:
            return
        ok = _is_int(value) if self.kind == "int" else _is_real(value)
        if ok:
            v = float(value)
            ok = math.isfinite(v)
            if ok and self.low is not None:
                ok = v >= self.low if self.closed in ("both", "left") else v > self.low
            if ok and self.high is not None:
                ok = v <= self.high if self.closed in ("both", "right") else v < self.high
        if not ok:
            raise ParameterError(f"{name} must be {self.describe()}, got {value!r}")


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (strings usually)."""

    options: tuple[Any, ...]
    none_ok: bool = False

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.none_ok:
            return
        if not isinstance(value, (str, int, float, type(None))) or value not in self.options:
            opts = ", ".join(repr(o) for o in self.options)
            extra = " or None" if self.none_ok else ""
            raise ParameterError(f"{name} must be one of {opts}{extra}, got {value!r}")


@dataclass(frozen=True)
class Check:
    """Any other rule: ``test(value)`` is true for valid values."""

    test: Callable[[Any], bool]
    expected: str

    def __call__(self, name: str, value: Any) -> None:
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"{name} must be {self.expected}, got {value!r}")


def validate_params(estimator: Any) -> None:
    """Check every constructor parameter of ``estimator`` against its class's rules.

    The rules are the ``_param_rules`` class dictionaries (parameter name →
    :class:`Interval` / :class:`OneOf` / :class:`Check`) merged along the
    class hierarchy, subclasses overriding bases.  Called at the start of
    ``fit``.

    Raises
    ------
    gaikan.errors.ParameterError
        The first parameter that breaks its rule, named in the message.
    """
    rules: dict[str, Callable[[str, Any], None]] = {}
    for klass in reversed(type(estimator).__mro__):
        rules.update(klass.__dict__.get("_param_rules", {}))
    params = estimator.get_params()
    for name, rule in rules.items():
        if name in params:
            rule(name, params[name])
