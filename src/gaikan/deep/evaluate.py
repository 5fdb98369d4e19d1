"""Evaluation of defect classifiers: metrics, figures and the pointing score.

Numerics (:func:`confusion_matrix`, :func:`classification_metrics`,
:func:`pointing_hits`, :func:`pointing_score`, :func:`top_losses`) take and
return numpy arrays and need neither torch nor matplotlib; the figure
helpers import matplotlib lazily; :func:`evaluate` ties them to a fitted
:class:`~gaikan.deep.classify.Classifier`.

Pointing score (Zhang et al., "Top-down neural attention by excitation
backprop", 2018): an explanation map *points* at the defect when its
maximum lies inside the true defect mask; the score is the share of
defective images it does so for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = [
    "Evaluation",
    "classification_metrics",
    "confusion_matrix",
    "evaluate",
    "plot_confusion_matrix",
    "plot_history",
    "plot_top_losses",
    "pointing_hits",
    "pointing_score",
    "top_losses",
]


def confusion_matrix(
    y_true: Any, y_pred: Any, labels: Sequence | np.ndarray | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of images of class ``labels[i]`` predicted as ``labels[j]``.

    Returns
    -------
    ndarray of int, shape (k, k)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ParameterError("y_true and y_pred differ in shape")
    labs = np.unique(np.r_[y_true, y_pred]) if labels is None else np.asarray(labels)
    index = {v: i for i, v in enumerate(labs.tolist())}
    cm = np.zeros((labs.size, labs.size), dtype=int)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t in index and p in index:
            cm[index[t], index[p]] += 1
    return cm


def classification_metrics(
    y_true: Any, y_pred: Any, labels: Sequence | np.ndarray | None = None
) -> dict:
    """Accuracy, per-class precision/recall/F1/support and macro averages.

    A class never predicted has precision 0; a class absent from ``y_true``
    has recall 0 (and is excluded from the macro averages).

    Returns
    -------
    dict
        ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
        ``labels`` (list), ``per_class`` (list of dicts with ``label``,
        ``precision``, ``recall``, ``f1``, ``support``), ``confusion``
        (list of lists).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labs = np.unique(np.r_[y_true, y_pred]) if labels is None else np.asarray(labels)
    cm = confusion_matrix(y_true, y_pred, labs)
    tp = np.diag(cm).astype(float)
    pred = cm.sum(0).astype(float)
    sup = cm.sum(1).astype(float)
    prec = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    rec = np.divide(tp, sup, out=np.zeros_like(tp), where=sup > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    present = sup > 0
    per = [
        {"label": lab, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for lab, p, r, f, s in zip(labs.tolist(), prec, rec, f1, sup)
    ]
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if y_true.size else float("nan"),
        "macro_precision": float(prec[present].mean()) if present.any() else float("nan"),
        "macro_recall": float(rec[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "labels": labs.tolist(),
        "per_class": per,
        "confusion": cm.tolist(),
    }


def pointing_hits(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Whether each map's maximum falls inside its mask.

    Parameters
    ----------
    maps : ndarray, shape (n, H, W)
    masks : ndarray of bool, shape (n, H, W)
    tolerance : int, default 0
        Count a hit within this many pixels (Chebyshev) of the mask.

    Returns
    -------
    ndarray of bool, shape (n,)
        Images with an empty mask are False.
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ParameterError(f"maps {maps.shape} and masks {masks.shape} must both be (n, H, W)")
    n, _H, W = maps.shape
    flat = np.nan_to_num(maps.reshape(n, -1), nan=-np.inf)
    arg = flat.argmax(1)
    r, c = np.divmod(arg, W)
    hits = np.empty(n, dtype=bool)
    t = int(tolerance)
    for i in range(n):
        win = masks[i, max(0, r[i] - t) : r[i] + t + 1, max(0, c[i] - t) : c[i] + t + 1]
        hits[i] = bool(win.any())
    return hits


def pointing_score(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> float:
    """Share of images (with a non-empty mask) whose map maximum lies in the mask."""
    masks = np.asarray(masks, dtype=bool)
    keep = masks.reshape(len(masks), -1).any(1)
    if not keep.any():
        return float("nan")
    return float(pointing_hits(np.asarray(maps)[keep], masks[keep], tolerance).mean())


def top_losses(
    proba: np.ndarray, y_true_idx: np.ndarray, k: int = 9
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cross-entropy losses of the ``k`` worst-classified images.

    Parameters
    ----------
    proba : ndarray, shape (n, n_classes)
    y_true_idx : ndarray of int, shape (n,)
        Column of the true class.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true_idx, dtype=int)
    loss = -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))
    order = np.argsort(-loss, kind="stable")[:k]
    return order, loss[order]


# --------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(cm: np.ndarray, labels: Sequence, normalize: bool = False, ax=None):
    """Confusion matrix as a matplotlib figure (rows: true class)."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    k = cm.shape[0]
    if ax is None:
        side = max(3.5, 0.45 * k + 1.5)
        fig, ax = plt.subplots(figsize=(side + 0.8, side))
    else:
        fig = ax.figure
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    im = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(
        range(k), [str(v) for v in labels], rotation=60, ha="right", fontsize=8 if k > 10 else 10
    )
    ax.set_yticks(range(k), [str(v) for v in labels], fontsize=8 if k > 10 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 12:
        thr = shown.max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    color="white" if shown[i, j] > thr else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict]):
    """Training curves: losses and validation accuracy per epoch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    if history and "valid_loss" in history[0]:
        ax.plot(ep, [h["valid_loss"] for h in history], "s-", label="valid loss")
        ax2 = ax.twinx()
        ax2.plot(ep, [h["accuracy"] for h in history], "g^--", label="valid accuracy")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1.02)
        ax2.legend(loc="center right")
    frozen = [h["epoch"] for h in history if h.get("stage") == "frozen"]
    if frozen:
        ax.axvspan(min(frozen) - 0.5, max(frozen) + 0.5, color="0.9", label="body frozen")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_top_losses(
    images: np.ndarray, maps: np.ndarray | None, titles: Sequence[str], ncols: int = 3
):
    """Gallery of images (grey, 0–255) with their explanation maps overlaid."""
    plt = _plt()
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        img = np.asarray(images[i], dtype=np.float64)
        if maps is not None:
            try:
                from ..report import overlay_rgb

                ax.imshow(overlay_rgb(img if img.ndim == 2 else img.mean(-1), maps[i]))
            except ImportError:  # pragma: no cover - report is core
                ax.imshow(img, cmap="gray", vmin=0, vmax=255)
                ax.imshow(maps[i], cmap="jet", alpha=0.4)
        else:
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- all in one
@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    metrics : dict
        :func:`classification_metrics` output.
    proba : ndarray, shape (n, k)
    y_pred : ndarray, shape (n,)
    top_loss_idx, top_loss_values : ndarray
    pointing : float or None
        Pointing score over defective images with masks.
    pointing_hits : ndarray of bool or None
    maps : ndarray (m, H, W) or None
        Explanation maps of the images with masks (in that order).
    """

    metrics: dict
    proba: np.ndarray
    y_pred: np.ndarray
    top_loss_idx: np.ndarray
    top_loss_values: np.ndarray
    pointing: float | None = None
    pointing_hits: np.ndarray | None = None
    maps: np.ndarray | None = field(default=None, repr=False)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    @property
    def macro_f1(self) -> float:
        return self.metrics["macro_f1"]


def evaluate(
    clf,
    X: Any,
    y: Any,
    masks: np.ndarray | None = None,
    method: str | None = None,
    k: int = 9,
    explain_target: str = "true",
    layer: str | None = None,
) -> Evaluation:
    """Evaluate a fitted classifier on a labelled test set.

    Parameters
    ----------
    clf : Classifier or ViTClassifier
    X : array-like, shape (n, H, W)
    y : array-like, shape (n,)
    masks : ndarray of bool, shape (n, H, W), optional
        True defect masks; images whose mask is non-empty enter the
        pointing score.
    method : str, optional
        Explanation method (default the classifier's).
    k : int
        Size of the top-losses list.
    explain_target : {"true", "pred"}
        Explain the true class (the usual pointing-game protocol) or the
        predicted one.
    layer : str, optional
        Module whose activations the CAM uses (default the last feature
        map; earlier layers give finer maps).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    proba = clf.predict_proba(X)
    y_pred = clf.classes_[proba.argmax(1)]
    metrics = classification_metrics(y, y_pred, labels=clf.classes_)
    yi = np.searchsorted(clf.classes_, y)
    yi = np.minimum(yi, len(clf.classes_) - 1)
    idx, losses = top_losses(proba, yi, k)
    ev = Evaluation(metrics, proba, y_pred, idx, losses)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        keep = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
        if keep.size:
            target = y[keep] if explain_target == "true" else None
            maps = clf.explain(X[keep], method=method, target=target, layer=layer)
            ev.maps = maps
            ev.pointing_hits = pointing_hits(maps, masks[keep])
            ev.pointing = float(ev.pointing_hits.mean())
    return ev
