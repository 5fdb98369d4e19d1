"""int8 post-training quantisation of an exported graph's convolutions (ONNX Runtime, static).

:func:`quantize_int8` rewrites an exported ONNX graph (a detector's or a
classifier's) so that every convolution — the backbone's, for the deep
detectors: their heads (Mahalanobis, nearest neighbour, SOART) are
MatMuls and stay float32 / float64 — runs in int8: weights per output
channel (symmetric int8), activations per tensor (asymmetric uint8) with
ranges calibrated on good images (min–max over the calibration batch).
The quantised graph uses QuantizeLinear / DequantizeLinear pairs (QDQ), so
ONNX Runtime fuses them into integer convolutions and OpenVINO runs the
same file as an int8 model.

Measured accuracy change (image AUROC) before it is offered: see
docs/export.md ("int8").
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import ParameterError

__all__ = ["quantize_int8"]


def quantize_int8(
    onnx_bytes: bytes,
    calibration: np.ndarray,
    *,
    input_name: str = "images",
    batch_size: int = 8,
    method: str = "minmax",
) -> bytes:
    """Quantise the convolutions of an exported graph to int8, calibrated on ``calibration``.

    Parameters
    ----------
    onnx_bytes : bytes
        The float32 exported graph (input ``input_name``: (n, H, W) 0–255).
    calibration : ndarray, shape (m, H, W)
        Good images at the graph's input size (0–255); 16–64 are enough.
        (Any (m, ...) batch of the graph's input works: the calibration
        runs feed slices along the first axis.)
    input_name : str
    batch_size : int
        Images per calibration run.
    method : {"minmax", "percentile", "entropy"}
        Activation range estimator (ONNX Runtime's calibrators).

    Returns
    -------
    bytes
        The quantised ONNX graph (QDQ format, opset unchanged).

    Raises
    ------
    ParameterError
        No calibration images, or an unknown method.
    """
    require("onnxruntime", "runtime")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ParameterError(f"method must be one of {', '.join(methods)}, got {method!r}")
    cal = np.asarray(calibration, dtype=np.float32)
    if cal.ndim < 3 or cal.shape[0] == 0:
        raise ParameterError(
            f"int8 calibration needs good images (m, H, W) at the model's size; got {cal.shape}"
        )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(
                [
                    {input_name: np.ascontiguousarray(cal[i : i + batch_size])}
                    for i in range(0, cal.shape[0], int(batch_size))
                ]
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self._it, None)

    previous = logging.root.manager.disable
    # ONNX Runtime's quantiser logs "consider pre-processing" warnings to the root logger
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="gaikan-int8-") as tmp:
            return _quantize(onnx_bytes, Reader(), Path(tmp), methods[method])
    finally:
        logging.disable(previous)


def _quantize(onnx_bytes: bytes, reader: Any, tmp: Path, method: Any) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(onnx_bytes)
    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        extra_options={"CalibTensorRangeSymmetric": False},
    )
    return dst.read_bytes()
