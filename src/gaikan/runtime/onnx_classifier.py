"""A classifier (single or ensemble) exported to one graph, run without torch.

``gaikan export`` (:func:`gaikan.deep.export_classifier.export_classifier`)
turns a fitted :class:`~gaikan.deep.classify.Classifier`, a raw-input
:class:`~gaikan.deep.classify.ViTClassifier` or a
:class:`~gaikan.deep.classify.ClassifierEnsemble` of them into one graph::

    images (n, H, W) float32, 0–255 grey, H × W = the training size
      → proba (n, k)   class probabilities, columns in ``classes_`` order

with the input pipeline inside (0–1 scaling, the reference channels
(image, mean good image, 0.5 + difference) of a ``reference=True`` model,
the antialiased resize to ``image_size``, the backbone's normalisation),
the network, the softmax and, for an ensemble, the mean of the members'
probabilities.  This class gives it the classifier interface that
:class:`gaikan.inspection.Inspector`, ``gaikan inspect``, ``serve`` and
``watch`` use (``classes_``, ``good_class_``, ``input_shape_``,
``predict_proba``, ``predict``, ``explain``), so the Inspector judges it as
the source (score = 1 − P(good)).

Explanations are not exported: :meth:`OnnxClassifier.explain` returns
all-zero maps, which the Inspector's display turns into "the whole part
carries the score" (no hottest point).  Keep the torch model where the
overlays matter.

Model file (kind ``onnx-classifier``): the graph members of its format
(``model.onnx``, or OpenVINO's ``model.xml`` + ``model.bin``; see
:mod:`gaikan.runtime.backends`) and ``params.json`` (params
``num_threads``, ``batch_size``; meta ``classes``, ``good_class``,
``input_shape``, ``image_size``, ``source_kind``, ``source_params``,
``n_members``, ``format``, ``opset``, ``exported_with``, ``check``).  No
pickle; every member checksummed.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from .._params import ParamsMixin
from .._validation import check_images
from ..errors import ModelFileError, NotFittedError, ParameterError
from ..modelfile import ModelFileMixin
from .backends import SessionMixin, graph_members

__all__ = ["CLASSIFIER_INPUT", "CLASSIFIER_OUTPUT", "OnnxClassifier"]

#: Name of the graph's input: (n, H, W) float32 on the 0–255 grey scale.
CLASSIFIER_INPUT = "images"
#: Name of the graph's output: (n, k) class probabilities.
CLASSIFIER_OUTPUT = "proba"


class OnnxClassifier(SessionMixin, ModelFileMixin, ParamsMixin):
    """A classifier exported to ONNX (or OpenVINO), run without torch.

    Parameters
    ----------
    num_threads : int, optional
        Inference threads (None: the engine's default, one per core).
    batch_size : int
        Images per graph run.

    Attributes
    ----------
    classes_ : ndarray, shape (k,)
    good_class_ : label or None
        The source's good class (score = 1 − P(good) in the Inspector).
    input_shape_ : list of int
        (H, W) the graph takes (the source's training size).
    image_size : (int, int)
        The network input the graph resizes to.
    source_kind_ : str
        ``"classifier"``, ``"vit-classifier"`` or ``"classifier-ensemble"``.
    source_params_ : dict
    n_members_ : int
        Networks averaged inside the graph (1 for a single classifier).
    format_ : {"onnx", "openvino"}
    export_info_ : dict
        Format, opset, versions, and the equality check made at export.

    Examples
    --------
    >>> clf = gaikan.load("defects.onnx.gaikan")     # doctest: +SKIP
    >>> clf.predict_proba(images)                    # doctest: +SKIP
    """

    kind: ClassVar[str] = "onnx-classifier"

    classes_: np.ndarray
    good_class_: Any
    input_shape_: list[int]
    image_size: tuple[int, ...]
    source_kind_: str
    source_params_: dict[str, Any]
    n_members_: int
    format_: str
    export_info_: dict[str, Any]
    _graph: dict[str, bytes]
    _session_: Any
    _lock: threading.Lock
    #: Explanation methods (none: explanations are not exported).
    methods: ClassVar[tuple[str, ...]] = ()
    #: False: :meth:`explain` returns zero maps (explanations are not exported).
    explains: ClassVar[bool] = False

    def __init__(self, num_threads: int | None = None, batch_size: int = 16) -> None:
        self.num_threads = num_threads
        self.batch_size = batch_size

    # -- fitting: not possible -----------------------------------------------
    def fine_tune(self, *args: Any, **kw: Any) -> OnnxClassifier:
        """Refused: an exported model is fixed.

        Raises
        ------
        ParameterError
            Always; train the source classifier and export it again.
        """
        raise ParameterError(
            "an exported (onnx-classifier) model cannot be trained; train the source "
            "classifier (gaikan train …) and export it again with gaikan export"
        )

    fit = fine_tune

    # -- prediction -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "_graph", None) is None:
            raise NotFittedError("this OnnxClassifier holds no graph; load an exported model")

    def _check_X(self, X: Any) -> np.ndarray:
        arr = np.asarray(X) if not isinstance(X, (list, tuple)) else X
        if isinstance(arr, np.ndarray) and arr.ndim == 4:
            raise ParameterError(
                "an exported classifier takes grey images (n, H, W); convert colour images "
                "to grey first (gaikan.io.load_images does)"
            )
        X = check_images(X, "X", np.float32)
        h, w = self.input_shape_
        if X.shape[1:] != (h, w):
            raise ParameterError(
                f"images are {X.shape[1]}×{X.shape[2]} but this exported classifier takes "
                f"{h}×{w} (its training size); load them at that size (gaikan inspect does)"
            )
        return X

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in ``classes_`` order."""
        self._check_fitted()
        X = self._check_X(X)
        sess = self._sess()
        b = int(self.batch_size)
        if b < 1:
            raise ParameterError(f"batch_size must be ≥ 1, got {self.batch_size!r}")
        out = []
        for i in range(0, X.shape[0], b):
            x = np.ascontiguousarray(X[i : i + b], dtype=np.float32)
            out.append(sess.run([CLASSIFIER_OUTPUT], {CLASSIFIER_INPUT: x})[0])
        return np.concatenate(out).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, shape (n,), taken from ``classes_``."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def explain(self, X: Any, method: str | None = None, target: Any = None, **kw: Any) -> Any:
        """All-zero maps (n, H, W): explanations are not part of the export.

        The Inspector's display then spreads the score over the whole part
        (no hottest point).  Use the torch model for Grad-CAM / IG overlays.
        """
        self._check_fitted()
        X = self._check_X(X)
        return np.zeros(X.shape, dtype=np.float64)

    # -- model file ---------------------------------------------------------------
    def to_modelfile(self):
        """The exported classifier as a :class:`gaikan.modelfile.ModelFile`."""
        from ..modelfile import ModelFile

        self._check_fitted()
        classes = self.classes_.tolist()
        good = self.good_class_
        meta = {
            "classes": classes,
            "classes_dtype": "str" if self.classes_.dtype.kind in "US" else "int",
            "good_class": good.item() if hasattr(good, "item") else good,
            "input_shape": [int(v) for v in self.input_shape_],
            "image_size": [int(v) for v in self.image_size],
            "source_kind": self.source_kind_,
            "source_params": self.source_params_,
            "n_members": int(self.n_members_),
            **self.export_info_,
        }
        return ModelFile(
            kind=self.kind,
            params={"num_threads": self.num_threads, "batch_size": int(self.batch_size)},
            meta=meta,
            arrays={},
            blobs=dict(self._graph),
        )

    @classmethod
    def from_modelfile(cls, mf) -> OnnxClassifier:
        """Rebuild an exported classifier from a :class:`ModelFile` (opens the graph now)."""
        if mf.kind != cls.kind:
            raise ModelFileError(f"model file holds a {mf.kind!r}, not a {cls.kind!r}")
        try:
            meta = mf.meta
            obj = cls(**mf.params)
            dtype = str if meta.get("classes_dtype") == "str" else int
            obj.classes_ = np.asarray(meta["classes"], dtype=dtype)
            good = meta.get("good_class")
            if good is not None and good not in obj.classes_.tolist():
                raise ModelFileError(f"good class {good!r} is not among {obj.classes_.tolist()}")
            obj.good_class_ = good
            shape = [int(v) for v in meta["input_shape"]]
            if len(shape) != 2 or min(shape) < 1:
                raise ValueError(f"input_shape {shape} is not (H, W)")
            obj.input_shape_ = shape
            obj.image_size = tuple(int(v) for v in meta["image_size"])
            obj.source_kind_ = str(meta["source_kind"])
            obj.source_params_ = dict(meta.get("source_params") or {})
            obj.n_members_ = int(meta.get("n_members", 1))
            obj.format_ = str(meta.get("format", "onnx"))
            graph_members(obj.format_)
            obj.export_info_ = {
                str(k): meta[k] for k in ("format", "opset", "exported_with", "check") if k in meta
            }
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"model file content does not fit {cls.__name__}: {exc}") from None
        obj._set_graph(mf.blobs)
        return obj

    def _set_graph(self, blobs: dict[str, bytes]) -> None:
        self._graph = {str(k): bytes(v) for k, v in blobs.items()}
        self._lock = threading.Lock()
        self._session_ = None
        # open now: a missing engine or a damaged graph is a load-time error
        sess = self._sess()
        if list(sess.input_names) != [CLASSIFIER_INPUT] or CLASSIFIER_OUTPUT not in list(
            sess.output_names
        ):
            raise ModelFileError(
                f"the exported graph has inputs {sess.input_names} and outputs "
                f"{sess.output_names}; an onnx-classifier needs input {CLASSIFIER_INPUT!r} "
                f"and output {CLASSIFIER_OUTPUT!r}"
            )

    @classmethod
    def from_graph(
        cls,
        graph: dict[str, bytes],
        *,
        classes: np.ndarray,
        good_class: Any,
        input_shape: tuple[int, int],
        image_size: tuple[int, ...],
        source_kind: str,
        source_params: dict[str, Any],
        n_members: int,
        export_info: dict[str, Any],
        num_threads: int | None = None,
        batch_size: int = 16,
    ) -> OnnxClassifier:
        """Build an exported classifier from its graph members and the source's facts.

        Parameters
        ----------
        graph : dict of str to bytes
            The graph members of ``export_info["format"]``.
        classes : ndarray, shape (k,)
        good_class : label or None
        input_shape : (int, int)
        image_size : (int, int)
            The network input (h, w).
        source_kind : str
        source_params : dict
            JSON-able constructor parameters of the source.
        n_members : int
        export_info : dict
            JSON-able facts about the export (``format`` at least).
        """
        obj = cls(num_threads=num_threads, batch_size=batch_size)
        obj.classes_ = np.asarray(classes)
        obj.good_class_ = good_class.item() if hasattr(good_class, "item") else good_class
        obj.input_shape_ = [int(input_shape[0]), int(input_shape[1])]
        obj.image_size = (int(image_size[0]), int(image_size[1]))
        obj.source_kind_ = source_kind
        obj.source_params_ = source_params
        obj.n_members_ = int(n_members)
        obj.format_ = str(export_info.get("format", "onnx"))
        graph_members(obj.format_)
        obj.export_info_ = dict(export_info)
        obj._set_graph(graph)
        return obj

    def __repr__(self) -> str:
        src = getattr(self, "source_kind_", "?")
        return (
            f"OnnxClassifier(source={src!r}, num_threads={self.num_threads!r}, "
            f"batch_size={self.batch_size!r})"
        )
