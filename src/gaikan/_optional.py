"""Import optional dependencies with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the pip extra.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"torch"``.
    extra : str
        The gaikan extra that provides it, e.g. ``"deep"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path
        raise ImportError(
            f"{module} is needed for this feature: pip install 'gaikan[{extra}]'"
        ) from exc
