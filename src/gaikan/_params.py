"""scikit-learn-style parameter handling shared by detectors and classifiers."""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar, TypeVar

from .errors import ParameterError

__all__ = ["ParamsMixin", "clone"]

E = TypeVar("E", bound="ParamsMixin")


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` from the ``__init__`` signature.

    Subclasses store every keyword parameter of ``__init__`` untouched under
    its own name, as scikit-learn estimators do.  Attributes derived from
    parameters but not fitted (a cached feature extractor, a cached tensor)
    are listed in ``_caches``; :meth:`set_params` drops them, so a changed
    parameter is honoured by the next call, and ``fit`` drops them too.
    """

    #: Names of derived, rebuildable attributes dropped by set_params / fit.
    _caches: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any):
        """Set constructor parameters; unknown names are a ParameterError.

        Derived caches (``_caches``) are dropped so that the new values are
        used.  Fitted attributes are kept until the next ``fit``.
        """
        valid = set(self._param_names())
        for k in params:
            if k not in valid:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {k!r}; "
                    f"it takes {', '.join(sorted(valid))}"
                )
        for k, v in params.items():
            setattr(self, k, v)
        self._drop_caches()
        return self

    def _drop_caches(self) -> None:
        for klass in type(self).__mro__:
            for name in klass.__dict__.get("_caches", ()):
                self.__dict__.pop(name, None)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def clone(estimator: E) -> E:
    """An unfitted copy of ``estimator`` with equal (deep-copied) parameters.

    As scikit-learn's ``clone``: ``type(est)(**deepcopy(est.get_params()))``;
    no fitted attribute or cache is carried over.
    """
    if not isinstance(estimator, ParamsMixin):
        raise ParameterError(
            f"cannot clone {type(estimator).__name__}: not a gaikan estimator (no get_params)"
        )
    return type(estimator)(**copy.deepcopy(estimator.get_params()))
