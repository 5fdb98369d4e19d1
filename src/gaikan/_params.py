"""scikit-learn-style parameter handling shared by detectors and classifiers."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` from the ``__init__`` signature.

    Subclasses store every keyword parameter of ``__init__`` untouched under
    its own name, as scikit-learn estimators do.
    """

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any):
        """Set constructor parameters; unknown names are an error."""
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
