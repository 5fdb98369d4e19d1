"""Torch-free runtime for exported models (extra ``gaikan[runtime]``: numpy + ONNX Runtime).

:class:`~gaikan.runtime.onnx_detector.OnnxDetector` (kind ``onnx-detector``)
runs a deep detector exported by ``gaikan export`` (:mod:`gaikan.deep.export`)
with ONNX Runtime only.  Importing this package imports neither torch nor
onnxruntime; the ONNX Runtime session is created when a model is loaded.
"""

from __future__ import annotations

from .onnx_detector import OnnxDetector

__all__ = ["OnnxDetector"]
