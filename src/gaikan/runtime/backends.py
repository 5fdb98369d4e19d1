"""Inference backends of the exported models: ONNX Runtime or OpenVINO, numpy in and out.

An exported gaikan model holds its graph in one of two formats:

``onnx``
    One blob member ``model.onnx``, run by ONNX Runtime (``gaikan[runtime]``).
``openvino``
    OpenVINO's IR, blob members ``model.xml`` (the topology) and
    ``model.bin`` (the weights), run by OpenVINO's CPU plugin
    (``gaikan[openvino]``).

Both are checksummed by the model file's manifest like every member.
:func:`open_backend` opens either behind the same small interface
(:class:`Backend`): ``run(outputs, feeds)`` → list of arrays, and the
graph's input and output names.  Neither torch nor the backend library is
imported before a model is opened.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .._optional import require
from ..errors import ModelFileError, ParameterError

__all__ = [
    "FORMATS",
    "Backend",
    "SessionMixin",
    "graph_members",
    "open_backend",
    "ort_session_options",
]

#: Graph formats and the blob members that hold them.
FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
}


def graph_members(fmt: str) -> tuple[str, ...]:
    """Blob members that hold a graph of format ``fmt``.

    Raises
    ------
    ModelFileError
        An unknown format (a model file from a newer gaikan).
    """
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ModelFileError(
            f"unknown exported graph format {fmt!r}; this gaikan runs {', '.join(FORMATS)} "
            "(a model file from a newer gaikan? upgrade gaikan)"
        ) from None


class Backend(Protocol):
    """What an exported model needs of an inference engine."""

    input_names: list[str]
    output_names: list[str]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph; the requested outputs, in order."""
        ...  # pragma: no cover - protocol


def ort_session_options(num_threads: int | None) -> Any:
    """The ONNX Runtime options every gaikan graph runs with (CPU, small machines).

    Sequential execution on ``num_threads`` intra-op threads (None: one per
    core), full graph optimisation, warnings only, no memory arena and no
    spinning idle threads.
    """
    ort = require("onnxruntime", "runtime")
    so = ort.SessionOptions()
    if num_threads is not None:
        so.intra_op_num_threads = int(num_threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # ORT's arena keeps the peak activation memory of the largest batch for
    # the session's lifetime (~0.5 GB at 16×256²); without it memory goes
    # back after each run at no measurable cost in speed.
    so.enable_cpu_mem_arena = False
    # Idle ORT threads spin by default and steal the cores of whatever runs
    # next (torch's Gaussians, image decoding, overlays) on a small CPU.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


class SessionMixin:
    """The model's backend, opened once on first use (thread-safe).

    For classes holding ``format_``, ``_graph`` (the graph's members),
    ``num_threads`` and a ``_lock``; the open backend is ``_session_``.
    """

    format_: str
    _graph: dict[str, bytes]
    num_threads: int | None
    _lock: Any
    _session_: Any = None

    def _sess(self) -> Backend:
        sess = self._session_
        if sess is None:
            with self._lock:
                sess = self._session_
                if sess is None:
                    sess = open_backend(self.format_, self._graph, self.num_threads)
                    self._session_ = sess
        return sess


class OrtBackend:
    """ONNX Runtime CPU session (sequential, no spinning threads, no memory arena)."""

    def __init__(self, graph: bytes, num_threads: int | None) -> None:
        ort = require("onnxruntime", "runtime")
        so = ort_session_options(num_threads)
        try:
            self.session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT's pybind errors derive from Exception only
            raise ModelFileError(
                f"the exported ONNX graph cannot be opened by this ONNX Runtime "
                f"({ort.__version__}): {exc}; export the model again with this gaikan"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(outputs, feeds))


class OpenVinoBackend:
    """OpenVINO CPU plugin, float32 inference precision (no silent bf16/f16)."""

    def __init__(self, xml: bytes, weights: bytes, num_threads: int | None) -> None:
        ov = _openvino()
        core = ov.Core()
        try:
            model = core.read_model(
                xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8).copy())
            )
            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
            if num_threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(num_threads)
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and friends
            raise ModelFileError(
                f"the exported OpenVINO graph cannot be opened by this OpenVINO "
                f"({ov.__version__}): {exc}; export the model again with this gaikan"
            ) from None
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        # a fresh request per call: concurrent callers (the station) never share one
        req = self.compiled.create_infer_request()
        res = req.infer(feeds)
        by_name = {k.get_any_name(): v for k, v in res.items()}
        return [np.asarray(by_name[o]) for o in outputs]


def _openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ModelFileError(
            f"this model was exported for OpenVINO, which is not installed ({exc}): "
            "pip install 'gaikan[openvino]', or export it again with --format onnx"
        ) from None
    return ov


def open_backend(fmt: str, blobs: dict[str, bytes], num_threads: int | None) -> Backend:
    """Open the graph held in ``blobs`` (the members :func:`graph_members` names).

    Parameters
    ----------
    fmt : {"onnx", "openvino"}
    blobs : dict of str to bytes
        Exactly the graph's members.
    num_threads : int or None
        CPU threads of the engine (None: its default, one per core).

    Raises
    ------
    ModelFileError
        Members missing or extra, an unreadable graph, or the engine not
        installed (the message says what to install).
    """
    names = graph_members(fmt)
    if set(blobs) != set(names):
        raise ModelFileError(
            f"an exported model of format {fmt!r} holds exactly the graph members "
            f"{list(names)}; found {sorted(blobs)}"
        )
    if num_threads is not None and int(num_threads) < 1:
        raise ParameterError(f"num_threads must be ≥ 1 or None, got {num_threads!r}")
    if fmt == "onnx":
        return OrtBackend(blobs["model.onnx"], num_threads)
    return OpenVinoBackend(blobs["model.xml"], blobs["model.bin"], num_threads)
