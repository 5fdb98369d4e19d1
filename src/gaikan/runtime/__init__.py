"""Torch-free runtime for exported models (extra ``gaikan[runtime]``: numpy + ONNX Runtime).

:class:`~gaikan.runtime.onnx_detector.OnnxDetector` (kind ``onnx-detector``)
runs a deep detector and
:class:`~gaikan.runtime.onnx_classifier.OnnxClassifier` (kind
``onnx-classifier``) a classifier or ensemble exported by ``gaikan export``
(:mod:`gaikan.deep.export`), with ONNX Runtime or, for models exported
with ``--format openvino``, OpenVINO (``gaikan[openvino]``;
:mod:`gaikan.runtime.backends`).  Importing this package imports neither
torch nor an inference engine; the engine is opened when a model is loaded.
"""

from __future__ import annotations

from .onnx_classifier import OnnxClassifier
from .onnx_detector import OnnxDetector

__all__ = ["OnnxClassifier", "OnnxDetector"]
