"""A deep detector exported to one graph, run by ONNX Runtime (or OpenVINO) without torch.

``gaikan export`` (:func:`gaikan.deep.export.export_detector`) turns a fitted
PaDiM, PatchCore or SOARTDeep into one ONNX graph from the grey image batch to the
detector's outputs::

    images (n, H, W) float32, 0–255
      → grid  (n, gh, gw)  patch anomaly grid (after the detector's grid blur)
      → score (n,)         image score = max of the grid
      → map   (n, H, W)    anomaly map (upsampled, and blurred where the source does)

The graph holds everything: resize, normalisation, backbone, feature
aggregation, the Mahalanobis / nearest-neighbour stage, upsampling and blur.
It is held as ONNX (run by ONNX Runtime) or, exported with ``--format
openvino``, as OpenVINO IR (run by OpenVINO); :mod:`gaikan.runtime.backends`
opens either.  This class wraps it in the detector contract of
:class:`gaikan.detectors.base.BaseDetector` (``detect``, ``anomaly_score``,
``anomaly_map``, ``patch_scores``, ``score_samples``, ``predict``,
``threshold_``, ``image_shape_``), so :class:`gaikan.inspection.Inspector`,
``gaikan inspect`` and ``gaikan serve`` open an exported model like any
other.  It imports numpy and ONNX Runtime only (extra ``gaikan[runtime]``).

Model file (kind ``onnx-detector``)
-----------------------------------
``model.onnx`` (format ``onnx``) or ``model.xml`` + ``model.bin`` (``openvino``)
    The graph (blob members; checksummed by the manifest like every member).
``arrays.npz``
    ``train_scores`` (the source's leave-one-out scores), ``map_rows``
    (H, gh) and ``map_cols`` (W, gw): the graph's final linear map from grid
    to image (upsampling and blur), used by :meth:`_to_map` on a grid.
``params.json``
    Params ``num_threads`` and ``batch_size``; meta: ``threshold``,
    ``image_shape``, ``grid``, ``source_kind``, ``source_params``,
    ``format``, ``opset``, the versions the graph was exported with, the
    export's equality ``check`` and, for an experimental int8 export,
    ``int8`` (calibration and its measured error).

An exported model cannot be refitted: fit the source detector and export
again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..detectors.base import BaseDetector, Detection
from ..errors import ModelFileError, ParameterError
from .backends import SessionMixin, graph_members

__all__ = ["GRAPH_INPUT", "GRAPH_MEMBER", "GRAPH_OUTPUTS", "OnnxDetector"]

#: Blob member that holds the ONNX graph.
GRAPH_MEMBER = "model.onnx"
#: Name of the graph's input: (n, H, W) float32 on the 0–255 grey scale.
GRAPH_INPUT = "images"
#: Names of the graph's outputs, in order.
GRAPH_OUTPUTS = ("grid", "score", "map")


class OnnxDetector(SessionMixin, BaseDetector):
    """A detector exported to ONNX, scored by ONNX Runtime (no torch).

    Parameters
    ----------
    num_threads : int, optional
        ONNX Runtime intra-op threads (None: ONNX Runtime's default, one per
        core).
    batch_size : int
        Images per graph run.  Small runs keep the activations in cache:
        PaDiM 256², 2 threads, 16 images in runs of 2: 10.6 ms/img, in one
        run of 16: 20.2 ms/img (``benchmarks/bench_export.py``).

    Attributes
    ----------
    threshold_ : float
        Image-score threshold, the source detector's at export.
    image_shape_ : (int, int)
        (H, W) the graph takes.
    train_scores_ : ndarray, shape (n_train,)
        The source detector's leave-one-out training scores.
    source_kind_ : str
        Kind of the exported detector (``"padim"``, ``"patchcore"``).
    source_params_ : dict
        Its constructor parameters.

    Examples
    --------
    >>> det = gaikan.load("padim.onnx.gaikan")       # doctest: +SKIP
    >>> det.detect(images).scores                    # doctest: +SKIP
    """

    kind = "onnx-detector"
    _input_dtype = np.float32

    def __init__(self, num_threads: int | None = None, batch_size: int = 2) -> None:
        self.num_threads = num_threads
        self.batch_size = batch_size

    # -- fitting: not possible -----------------------------------------------
    def fit(self, X: Any, y: Any = None) -> OnnxDetector:
        """Refused: an exported model is fixed.

        Raises
        ------
        ParameterError
            Always; fit the source detector (``source_kind_``) and export again.
        """
        raise ParameterError(
            "an exported (onnx-detector) model cannot be fitted; fit the source detector "
            "(gaikan fit --detector padim …) and export it again with gaikan export"
        )

    # -- running the graph ---------------------------------------------------
    @property
    def _chunk(self) -> int:  # type: ignore[override]
        b = int(self.batch_size)
        if b < 1:
            raise ParameterError(f"batch_size must be ≥ 1, got {self.batch_size!r}")
        return b

    def _run(
        self,
        X: np.ndarray,
        outputs: tuple[str, ...],
        progress: Callable[[int], None] | None = None,
    ) -> list[np.ndarray]:
        """Run the graph chunk by chunk on checked images; float64 outputs."""
        sess = self._sess()
        parts: list[list[np.ndarray]] = []
        for i in range(0, X.shape[0], self._chunk):
            x = np.ascontiguousarray(X[i : i + self._chunk], dtype=np.float32)
            parts.append(sess.run(list(outputs), {GRAPH_INPUT: x}))
            if progress is not None:
                progress(x.shape[0])
        return [
            np.concatenate([p[k] for p in parts]).astype(np.float64) for k in range(len(outputs))
        ]

    def _patch_scores(self, X: np.ndarray) -> np.ndarray:
        return self._run(X, ("grid",))[0]

    def _to_map(self, grid: np.ndarray) -> np.ndarray:
        """Grid (n, gh, gw) → map (n, H, W) with the graph's own final linear map."""
        g = np.asarray(grid, dtype=np.float32)
        return np.einsum("hg,ngk,wk->nhw", self.map_rows_, g, self.map_cols_).astype(np.float64)

    def anomaly_map(self, X: Any) -> np.ndarray:
        """Anomaly map at image resolution, higher = worse, shape (n, H, W)."""
        return self._run(self._check_input(X), ("map",))[0]

    def anomaly_score(self, X: Any) -> np.ndarray:
        """Image anomaly score (max of the grid), higher = worse, shape (n,)."""
        return self._run(self._check_input(X), ("score",))[0]

    def detect(self, X: Any, progress: Callable[[int], None] | None = None) -> Detection:
        """Scores, maps and verdicts from one run of the graph.

        Parameters
        ----------
        X : array-like, shape (n, H, W), 0–255
        progress : callable, optional
            Called with the number of images finished after each chunk.
        """
        X = self._check_input(X)
        scores, maps = self._run(X, ("score", "map"), progress)
        return Detection(scores=scores, maps=maps, threshold=self.threshold_)

    @property
    def grid_shape_(self) -> tuple[int, int]:
        """Patch grid (gh, gw) of the graph's ``grid`` output."""
        return (int(self.map_rows_.shape[1]), int(self.map_cols_.shape[1]))

    # -- model file ----------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "map_rows": np.asarray(self.map_rows_, dtype=np.float32),
            "map_cols": np.asarray(self.map_cols_, dtype=np.float32),
        }
        meta: dict[str, Any] = {
            "grid": list(self.grid_shape_),
            "source_kind": self.source_kind_,
            "source_params": self.source_params_,
            **self.export_info_,
        }
        return arrays, meta

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        rows = np.asarray(arrays["map_rows"], dtype=np.float32)
        cols = np.asarray(arrays["map_cols"], dtype=np.float32)
        h, w = self.image_shape_
        if rows.ndim != 2 or cols.ndim != 2 or rows.shape[0] != h or cols.shape[0] != w:
            raise ValueError(
                f"map matrices {rows.shape} and {cols.shape} do not fit images of {h}x{w}"
            )
        if [rows.shape[1], cols.shape[1]] != list(meta["grid"]):
            raise ValueError(f"map matrices do not fit the stored grid {meta['grid']}")
        self.map_rows_, self.map_cols_ = rows, cols
        self.source_kind_ = str(meta["source_kind"])
        self.source_params_ = dict(meta.get("source_params") or {})
        self.export_info_: dict[str, Any] = {
            str(k): meta[k]
            for k in ("format", "opset", "exported_with", "check", "int8")
            if k in meta
        }
        self.format_ = str(meta.get("format", "onnx"))
        graph_members(self.format_)  # an unknown format is a model-file error now

    def _get_blobs(self) -> dict[str, bytes]:
        return dict(self._graph)

    def _set_blobs(self, blobs: dict[str, bytes]) -> None:
        self._graph = {str(k): bytes(v) for k, v in blobs.items()}
        self._lock = threading.Lock()
        self._session_ = None
        # open the graph now: a missing engine or an unreadable graph is a
        # load-time error (gaikan inspect exits 4), not a scoring-time one
        sess = self._sess()
        names = list(sess.output_names)
        inputs = list(sess.input_names)
        if inputs != [GRAPH_INPUT] or not set(GRAPH_OUTPUTS) <= set(names):
            raise ModelFileError(
                f"the ONNX graph has inputs {inputs} and outputs {names}; an onnx-detector "
                f"needs input {GRAPH_INPUT!r} and outputs {list(GRAPH_OUTPUTS)}"
            )

    @classmethod
    def from_graph(
        cls,
        graph: bytes | dict[str, bytes],
        *,
        threshold: float,
        image_shape: tuple[int, int],
        train_scores: np.ndarray,
        n_train: int,
        map_rows: np.ndarray,
        map_cols: np.ndarray,
        source_kind: str,
        source_params: dict[str, Any],
        export_info: dict[str, Any] | None = None,
        num_threads: int | None = None,
        batch_size: int = 2,
    ) -> OnnxDetector:
        """Build a fitted detector from an exported graph and the source's state.

        Parameters
        ----------
        graph : bytes or dict of str to bytes
            Serialised ONNX model with input ``images`` and outputs
            ``grid``, ``score``, ``map``; or the blob members of the
            format named by ``export_info["format"]``
            (:data:`gaikan.runtime.backends.FORMATS`).
        threshold : float
        image_shape : (int, int)
        train_scores : ndarray, shape (k,)
        n_train : int
        map_rows : ndarray, shape (H, gh)
        map_cols : ndarray, shape (W, gw)
        source_kind : str
        source_params : dict
            JSON-able constructor parameters of the source detector.
        export_info : dict, optional
            JSON-able facts about the export (format, opset, versions, check).
        """
        det = cls(num_threads=num_threads, batch_size=batch_size)
        det.image_shape_ = (int(image_shape[0]), int(image_shape[1]))
        det.n_train_ = int(n_train)
        det.train_scores_ = np.asarray(train_scores, dtype=np.float64)
        meta = {
            "grid": [int(np.shape(map_rows)[1]), int(np.shape(map_cols)[1])],
            "source_kind": source_kind,
            "source_params": source_params,
            **(export_info or {}),
        }
        det._set_state({"map_rows": map_rows, "map_cols": map_cols}, meta)
        det._set_blobs(graph if isinstance(graph, dict) else {GRAPH_MEMBER: graph})
        det.set_threshold(float(threshold))
        return det

    def __repr__(self) -> str:
        src = getattr(self, "source_kind_", "?")
        return (
            f"OnnxDetector(source={src!r}, num_threads={self.num_threads!r}, "
            f"batch_size={self.batch_size!r})"
        )
