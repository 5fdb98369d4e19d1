"""Exceptions raised by gaikan.

Every error that a user can cause (a bad image, a bad model file, too few
good images) derives from :class:`GaikanError`, so a caller that inspects a
batch can catch one type, report it and go on.
"""

from __future__ import annotations

__all__ = [
    "GaikanError",
    "ImageError",
    "ModelFileError",
    "NotFittedError",
    "ParameterError",
]


class GaikanError(Exception):
    """Base class of every error gaikan raises on purpose."""


class ImageError(GaikanError, ValueError):
    """An image file could not be read or is unusable.

    The message always names the file and says what to do about it.
    """

    def __init__(self, path: object, problem: str, fix: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class ModelFileError(GaikanError, ValueError):
    """A model file is missing, truncated, tampered with or of another version."""


class NotFittedError(GaikanError, AttributeError):
    """A detector method that needs ``fit`` was called before it."""


class ParameterError(GaikanError, ValueError):
    """A parameter or an input array is unusable (bad value, shape or type).

    Raised by ``fit`` when it validates an estimator's parameters and by
    every method that validates its input; the message names the parameter
    and the accepted values.
    """
