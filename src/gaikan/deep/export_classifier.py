"""Export a fitted classifier or ensemble to one graph (a torch-free ``onnx-classifier``).

The graph takes the grey image batch (n, H, W) on the 0–255 scale at the
classifier's training size and gives the class probabilities (n, k).
Inside, per member: the 0–1 scaling, the reference channels (image, mean
good image, 0.5 + difference) of a ``reference=True`` model, the focus
window of a ``focus=N`` model (the N×N crop around the largest smoothed
difference from the reference), the antialiased resize to
``image_size`` (as a pair of matrices measured on torch's own
``interpolate``, :func:`gaikan.deep.export.separable_matrices`), the
normalisation, the network and the softmax; an ensemble averages its
members' probabilities inside the graph.

Every export is checked like the detectors': the exported model and the
source predict a batch (``check_images``, default a seeded synthetic
batch at the training size) and the export is refused unless every
probability agrees within 1e-4 relative or 1e-5 absolute and the
Inspector's verdicts (score = 1 − P(good) against 0.5) and predicted
classes are identical.

Not exported: explanations (the exported model's ``explain`` returns zero
maps) and the SOART-input ViT (its SOART stage runs in numpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from ..errors import ParameterError
from ..runtime.onnx_classifier import CLASSIFIER_INPUT, CLASSIFIER_OUTPUT, OnnxClassifier
from .export import ExportCheckError, _check_batch, _jsonable, _torch_fn, separable_matrices

__all__ = [
    "PROBA_ATOL",
    "PROBA_RTOL",
    "compare_classifiers",
    "export_classifier",
]

#: Largest relative probability difference an export may show against its source …
PROBA_RTOL = 1e-4
#: … or, whichever is larger, absolute.
PROBA_ATOL = 1e-5
#: Kinds :func:`export_classifier` handles.
CLASSIFIER_KINDS = ("classifier", "vit-classifier", "classifier-ensemble")


def _members(clf: Any) -> list[Any]:
    kind = getattr(type(clf), "kind", "")
    if kind not in CLASSIFIER_KINDS:
        raise ParameterError(
            f"export_classifier handles {', '.join(CLASSIFIER_KINDS)} models; this is a "
            f"{kind or type(clf).__name__!r} model"
        )
    clf._check_fitted()
    members = list(clf.members_) if kind == "classifier-ensemble" else [clf]
    for m in members:
        if getattr(type(m), "kind", "") == "vit-classifier" and m.input != "raw":
            raise ParameterError(
                "a ViTClassifier on SOART input cannot be exported (its SOART stage runs in "
                "numpy); export a raw-input ViT or a CNN classifier"
            )
        if getattr(m, "device", "cpu") != "cpu":
            raise ParameterError(
                f"export a classifier on the CPU: set_params(device='cpu') (it is on {m.device})"
            )
    return members


def _member_module(clf: Any, shape: tuple[int, int]) -> Any:
    """One member as a torch module: (n, H, W) 0–255 → (n, k) probabilities."""
    torch = require("torch", "deep")
    F = torch.nn.functional
    from scipy.ndimage import gaussian_filter

    pipe = clf.input_pipeline()
    H, W = shape
    size = tuple(int(v) for v in pipe.size)
    focus = int(pipe.focus) if pipe.focus else 0
    fh, fw = (min(focus, H), min(focus, W)) if focus else (H, W)

    def resize(x: Any) -> Any:
        return F.interpolate(
            x[:, None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[:, 0]

    mats = None
    if (fh, fw) != size:
        R, C = separable_matrices(_torch_fn(resize), (fh, fw))
        mats = (torch.from_numpy(R), torch.from_numpy(C.T.copy()))
    blur = None
    if focus:
        sig = float(pipe.focus_sigma)
        # scipy's Gaussian of |X − reference| (mode "nearest") is separable and linear
        Rb, Cb = separable_matrices(
            lambda z: gaussian_filter(
                np.asarray(z, np.float64), sigma=(0, sig, sig), mode="nearest"
            ),
            (H, W),
            dtype=np.float64,
        )
        blur = (torch.from_numpy(Rb), torch.from_numpy(Cb.T.copy()))
    ref = None if pipe.reference is None or not pipe.compare else pipe.reference
    ref_focus = None if not focus else pipe.reference
    nchan = 3 if ref is not None else 1
    mean = np.asarray(pipe.mean, np.float32)[:nchan]
    std = np.asarray(pipe.std, np.float32)[:nchan]
    expand3 = nchan == 1 and pipe.expand(torch.zeros(1, 1, 2, 2)).shape[1] == 3
    clamp = getattr(type(clf), "kind", "") == "vit-classifier"
    model = clf.model_.eval()
    nn: Any = torch.nn

    class Member(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.mats = mats
            self.blur = blur
            self.register_buffer("mean", torch.from_numpy(mean.copy()).view(1, -1, 1, 1))
            self.register_buffer("std", torch.from_numpy(std.copy()).view(1, -1, 1, 1))
            if ref is not None:
                self.register_buffer(
                    "ref", torch.from_numpy(np.asarray(ref / 255.0, np.float32))[None, None]
                )
            if ref_focus is not None:
                self.register_buffer(
                    "ref255", torch.from_numpy(np.asarray(ref_focus, np.float32))[None]
                )

        def _crop(self, images: Any, t: Any) -> Any:
            """The focus window of every image (``focus_boxes`` + slicing, as gathers)."""
            n = t.shape[0]
            d = torch.abs(images - self.ref255).double()
            blur: Any = self.blur
            d = torch.matmul(torch.matmul(blur[0], d), blur[1])  # (n, H, W)
            # scipy filters a float32 image in float64 and rounds to float32; so do we,
            # then the first maximum, as numpy's argmax
            idx = d.float().flatten(1).argmax(dim=1)
            r = torch.div(idx, W, rounding_mode="floor")
            c = idx - r * W
            r0 = torch.clamp(r - fh // 2, 0, H - fh)
            c0 = torch.clamp(c - fw // 2, 0, W - fw)
            rows = r0[:, None] + torch.arange(fh)[None]  # (n, fh)
            cols = c0[:, None] + torch.arange(fw)[None]  # (n, fw)
            ch = t.shape[1]
            t = torch.gather(t, 2, rows[:, None, :, None].expand(n, ch, fh, W))
            return torch.gather(t, 3, cols[:, None, None, :].expand(n, ch, fh, fw))

        def forward(self, images: Any) -> Any:  # (n, H, W) float32, 0–255
            t = images[:, None] / 255.0
            if ref is not None:
                r = self.ref.expand(t.shape[0], 1, H, W)
                t = torch.cat([t, r, 0.5 + (t - r)], 1)
            if focus:
                t = self._crop(images, t)
            if self.mats is not None:
                t = torch.matmul(torch.matmul(self.mats[0], t), self.mats[1])
            t = (t - self.mean) / self.std
            if clamp:
                t = t.clamp(-10.0, 10.0)
            if expand3:
                t = t.expand(-1, 3, -1, -1)
            return torch.softmax(self.model(t), dim=1)

    return Member().eval()


def _graph_module(members: list[Any], shape: tuple[int, int]) -> Any:
    torch = require("torch", "deep")
    subs = [_member_module(m, shape) for m in members]
    nn: Any = torch.nn

    class Mean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(subs)

        def forward(self, images: Any) -> Any:
            p = self.members[0](images)
            for m in self.members[1:]:
                p = p + m(images)
            return p / float(len(subs)) if len(subs) > 1 else p

    return Mean().eval()


def _to_onnx(graph: Any, shape: tuple[int, int], opset: int) -> bytes:
    import io
    import warnings

    torch = require("torch", "deep")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.full((2, *shape), 128.0),),
            buf,
            input_names=[CLASSIFIER_INPUT],
            output_names=[CLASSIFIER_OUTPUT],
            dynamic_axes={CLASSIFIER_INPUT: {0: "n"}, CLASSIFIER_OUTPUT: {0: "n"}},
            opset_version=int(opset),
            dynamo=False,
        )
    return buf.getvalue()


def compare_classifiers(source: Any, exported: Any, images: np.ndarray) -> dict[str, Any]:
    """How closely ``exported`` predicts like ``source`` on ``images``.

    Parameters
    ----------
    source, exported : fitted classifiers
    images : ndarray, shape (n, H, W), 0–255

    Returns
    -------
    dict
        ``n``, ``proba_rel`` (max relative difference, over probabilities
        above :data:`PROBA_ATOL`), ``proba_abs`` (max absolute difference),
        ``verdicts_equal`` (score = 1 − P(good) against 0.5, as the
        Inspector judges), ``classes_equal`` (argmax), ``ok``.
    """
    from ..inspection.judge import CLASSIFIER_THRESHOLD

    a = np.asarray(source.predict_proba(images), np.float64)
    b = np.asarray(exported.predict_proba(images), np.float64)
    diff = np.abs(b - a)
    rel = float((diff / np.maximum(np.abs(a), PROBA_ATOL)).max())
    ok_each = diff <= np.maximum(PROBA_RTOL * np.abs(a), PROBA_ATOL)
    labels = [str(c) for c in np.asarray(source.classes_).tolist()]
    good = source.good_class_
    if good is None:
        same_verdicts = True  # every part scores 1 in both
    else:
        g = labels.index(str(good))
        same_verdicts = bool(
            np.array_equal(
                1.0 - a[:, g] > CLASSIFIER_THRESHOLD, 1.0 - b[:, g] > CLASSIFIER_THRESHOLD
            )
        )
    same_classes = bool(np.array_equal(a.argmax(1), b.argmax(1)))
    return {
        "n": len(images),
        "proba_rel": rel,
        "proba_abs": float(diff.max()),
        "verdicts_equal": same_verdicts,
        "classes_equal": same_classes,
        "ok": bool(ok_each.all() and same_verdicts and same_classes),
    }


def export_classifier(
    clf: Any,
    *,
    fmt: str = "onnx",
    opset: int = 17,
    check_images: np.ndarray | None = None,
    num_threads: int | None = None,
) -> OnnxClassifier:
    """Export a fitted Classifier, raw ViT or ClassifierEnsemble to an :class:`OnnxClassifier`.

    Parameters
    ----------
    clf : fitted Classifier, ViTClassifier (``input="raw"``) or ClassifierEnsemble
    fmt : {"onnx", "openvino"}
        Graph format (OpenVINO: the ONNX graph converted to OpenVINO IR).
    opset : int
        ONNX opset.
    check_images : ndarray, shape (n, H, W), optional
        Grey images at the training size the export is verified on
        (default: a seeded synthetic batch).  Give real parts of every class.
    num_threads : int, optional
        Inference threads of the returned model (stored in its params).

    Returns
    -------
    OnnxClassifier
        ``.save(path)`` writes the model file (kind ``onnx-classifier``).

    Raises
    ------
    ParameterError
        An unfitted or unsupported model, or bad check images.
    ExportCheckError
        The exported graph does not predict like ``clf`` on the check images.
    """
    torch = require("torch", "deep")
    from .. import __version__
    from ..io import classifier_image_shape
    from .export import to_format

    members = _members(clf)
    hw = classifier_image_shape(clf)
    if hw is None:
        raise ParameterError(
            f"this {type(clf).__name__} knows no image size; it cannot be exported"
        )
    shape = (int(hw[0]), int(hw[1]))
    graph = _graph_module(members, shape)
    onnx_bytes = _to_onnx(graph, shape, opset)
    blobs = to_format(onnx_bytes, fmt)
    info: dict[str, Any] = {
        "format": fmt,
        "opset": int(opset),
        "exported_with": {"gaikan": __version__, "torch": str(torch.__version__)},
    }
    kind = str(type(clf).kind)
    params = clf.get_params()
    if kind == "classifier-ensemble":
        params = {"n_members": int(clf.n_members), "estimator": members[0].get_params()}
    out = OnnxClassifier.from_graph(
        blobs,
        classes=np.asarray(clf.classes_),
        good_class=clf.good_class_,
        input_shape=shape,
        image_size=tuple(int(v) for v in members[0].input_pipeline().size),
        source_kind=kind,
        source_params=_jsonable_deep(params),
        n_members=len(members),
        export_info=info,
        num_threads=num_threads,
    )
    if check_images is None:
        imgs = _check_batch(shape)
    else:
        imgs = np.asarray(check_images, np.float32)
        if imgs.ndim != 3 or imgs.shape[1:] != shape:
            raise ParameterError(
                f"check images must be grey (n, {shape[0]}, {shape[1]}) at the training size; "
                f"got {imgs.shape}"
            )
    check = compare_classifiers(clf, out, imgs)
    if not check["ok"]:
        raise ExportCheckError(
            f"the exported graph does not predict like the {kind} model on {check['n']} check "
            f"images (probability error {check['proba_abs']:.2g} absolute, "
            f"{check['proba_rel']:.2g} relative; limits {PROBA_ATOL:g} / {PROBA_RTOL:g}; "
            f"verdicts equal: {check['verdicts_equal']}, classes equal: "
            f"{check['classes_equal']}); please report this with the model's kind and params"
        )
    out.export_info_["check"] = check
    return out


def _jsonable_deep(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters as JSON (numpy scalars → Python, anything else → str)."""
    import json

    out = _jsonable(params)
    return dict(
        json.loads(json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    )
