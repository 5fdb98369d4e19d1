"""gaikan's version (a module of its own, so nothing needs the package root)."""

__version__ = "0.1.0"
