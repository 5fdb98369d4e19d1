"""Pictures and reports: heatmap overlays and the HTML inspection report.

Colour scale of overlays.  Anomaly maps are D² values whose good-part
level is about 1 and whose defects reach 10²–10⁴, so a linear scale hides
either the one or the other.  With a threshold t the scale is logarithmic,
``log(1 + D²) / log(1 + 4t)`` clipped to [0, 1]: good areas stay blue, a
patch at the threshold is yellow-orange, four times the threshold is red —
the same colours mean the same thing on every image of a model.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "InspectionRecord",
    "heat_norm",
    "overlay_png",
    "overlay_rgb",
    "save_overlay",
    "write_report",
]

_LUTS: dict[str, np.ndarray] = {}


def _lut(cmap: str) -> np.ndarray:
    if cmap not in _LUTS:
        import matplotlib

        rgba = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))
        _LUTS[cmap] = (rgba[:, :3] * 255).round().astype(np.uint8)
    return _LUTS[cmap]


def heat_norm(
    amap: np.ndarray,
    threshold: float | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Scale an anomaly map to [0, 1] for display (see module docstring)."""
    m = np.asarray(amap, dtype=np.float64)
    if threshold is not None and threshold > 0:
        return np.clip(np.log1p(np.maximum(m, 0.0)) / math.log1p(4.0 * threshold), 0.0, 1.0)
    lo = float(np.min(m)) if vmin is None else float(vmin)
    hi = float(np.max(m)) if vmax is None else float(vmax)
    if hi <= lo:
        return np.zeros_like(m)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0)


def overlay_rgb(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.45,
    threshold: float | None = None,
    cmap: str = "jet",
) -> np.ndarray:
    """Blend a heatmap over a grey image.

    Parameters
    ----------
    image : ndarray, shape (H, W), 0–255
    amap : ndarray, shape (H, W)
    vmin, vmax : float, optional
        Linear colour range (default: the map's own range).
    alpha : float
        Opacity of the heatmap.
    threshold : float, optional
        Use the logarithmic threshold-anchored scale instead.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != np.shape(amap):
        raise ValueError(f"image {img.shape} and map {np.shape(amap)} differ in shape")
    heat = _lut(cmap)[(heat_norm(amap, threshold, vmin, vmax) * 255).round().astype(np.intp)]
    grey = np.clip(img, 0, 255)[..., None]
    return np.clip((1 - alpha) * grey + alpha * heat, 0, 255).round().astype(np.uint8)


def overlay_png(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.45,
    threshold: float | None = None,
    compress_level: int = 1,
) -> bytes:
    """:func:`overlay_rgb` encoded as PNG bytes.

    ``compress_level`` 1 (zlib's fastest) is the default: on a 256² overlay
    it makes encoding several times faster than Pillow's default for a file
    about a third larger, which is the right trade on an inspection line.
    """
    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(image, amap, vmin, vmax, alpha, threshold)).save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()


def save_overlay(path: str | os.PathLike, image: np.ndarray, amap: np.ndarray, **kw: Any) -> None:
    """Write :func:`overlay_png` to ``path``."""
    Path(path).write_bytes(overlay_png(image, amap, **kw))


@dataclass
class InspectionRecord:
    """One row of an inspection: a file and what became of it."""

    file: str
    score: float | None = None
    verdict: str | None = None  # "ok" | "defect" | None when it failed
    error: str | None = None
    label: str | None = None  # folder-derived ground truth, if any
    overlay: str | None = None  # path of the overlay PNG relative to the report
    extra: dict[str, Any] = field(default_factory=dict)


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _histogram(records: Sequence[InspectionRecord], threshold: float, labelled: bool) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scored = [r for r in records if r.score is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    vals = np.array([r.score for r in scored], dtype=float)
    lo = max(min(vals.min(), threshold) * 0.8, 1e-3)
    hi = max(vals.max(), threshold) * 1.25
    bins = np.geomspace(lo, hi, 40)
    if labelled:
        groups = [
            ("good (folder)", [r.score for r in scored if r.label == "good"], "tab:blue"),
            (
                "defect (folder)",
                [r.score for r in scored if r.label not in (None, "good")],
                "tab:red",
            ),
        ]
    else:
        groups = [
            ("ok", [r.score for r in scored if r.verdict == "ok"], "tab:blue"),
            ("flagged", [r.score for r in scored if r.verdict == "defect"], "tab:red"),
        ]
    for name, v, c in groups:
        if v:
            ax.hist(np.clip(v, lo, hi), bins=bins, alpha=0.6, label=f"{name} ({len(v)})", color=c)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("anomaly score (max patch D², log scale)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return _fig_png(fig)


def _roc(records: Sequence[InspectionRecord]) -> tuple[str, float] | None:
    from .metrics import roc_auc, roc_curve

    scored = [r for r in records if r.score is not None and r.label is not None]
    y = np.array([r.label != "good" for r in scored])
    if y.size == 0 or y.all() or not y.any():
        return None
    s = np.array([r.score for r in scored])
    auc = roc_auc(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot(fpr, tpr, color="tab:red", lw=2)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, AUROC = {auc:.3f}")
    return _fig_png(fig), auc


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#1a7f37;font-weight:600}.defect{color:#c62828;font-weight:600}.err{color:#8a6d00}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{width:200px;font-size:.8em}
.card img{width:200px;image-rendering:pixelated;border:1px solid #999}
.card div{overflow-wrap:anywhere}
.summary td:first-child{font-weight:600}
</style></head><body>
<h1>{{ title }}</h1>
<table class="summary">
<tr><td>model</td><td>{{ model }}</td></tr>
{% if not classifier %}<tr><td>threshold</td><td>{{ "%.4g"|format(threshold) }}</td></tr>{% endif %}
<tr><td>images</td><td>{{ n_total }} ({{ n_scored }} scored, {{ n_errors }} unreadable)</td></tr>
{% if not classifier %}<tr><td>flagged as defect</td><td>{{ n_defect }}</td></tr>{% endif %}
{% if auc is not none %}<tr><td>image AUROC (folder labels)</td><td>{{ "%.4f"|format(auc) }}</td></tr>{% endif %}
{% for k, v in extra %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
</table>
{% if hist %}<h2>Scores</h2><img alt="score histogram" src="data:image/png;base64,{{ hist }}">
{% if roc %}<img alt="ROC curve" src="data:image/png;base64,{{ roc }}">{% endif %}{% endif %}
{% if classifier %}<h2>Least confident first</h2>
<p>Heatmap: where the network looked for its answer (red = most).</p>
{% else %}<h2>Worst parts</h2>
<p>Heatmap: blue = like the good parts, yellow = at the threshold, red = four times over it.</p>{% endif %}
<div class="gallery">
{% for r in worst %}<div class="card">{% if r.overlay %}<img src="{{ r.overlay }}" alt="overlay">{% endif %}
<div title="{{ r.file }}">{{ short(r.file) }}</div><div class="{{ r.verdict if not classifier else 'cls' }}">{{ r.verdict }} · {{ "%.4g"|format(r.score) }}{% if r.label %} · folder: {{ r.label }}{% endif %}</div></div>
{% endfor %}</div>
{% if errors %}<h2>Files that could not be inspected</h2>
<table><tr><th>file</th><th>problem</th></tr>
{% for r in errors %}<tr><td>{{ r.file }}</td><td class="err">{{ r.error }}</td></tr>{% endfor %}
</table>{% endif %}
<h2>All results</h2>
<table><tr><th>file</th><th>{{ "confidence" if classifier else "score" }}</th><th>{{ "class" if classifier else "verdict" }}</th>{% if labelled %}<th>folder</th>{% endif %}</tr>
{% for r in rows %}<tr><td>{{ r.file }}</td><td>{{ "" if r.score is none else "%.4g"|format(r.score) }}</td>
<td class="{{ (r.verdict if not classifier else 'cls') if r.verdict else 'err' }}">{{ r.verdict or "error" }}</td>{% if labelled %}<td>{{ r.label or "" }}</td>{% endif %}</tr>
{% endfor %}</table>
<p style="color:#777;font-size:.8em">gaikan {{ version }}</p>
</body></html>
"""


def write_report(
    out_dir: str | os.PathLike,
    records: Sequence[InspectionRecord],
    *,
    threshold: float | None,
    model: str = "",
    title: str = "gaikan inspection report",
    n_worst: int = 24,
    extra: dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write ``report.html`` into ``out_dir``: summary, score histogram,
    ROC curve when folder labels exist, gallery of the worst parts, errors,
    and every result.

    For a classifier pass ``classes`` (and ``threshold=None``): records'
    ``verdict`` is the class and ``score`` its probability; the report then
    counts parts per class and shows the least confident first.

    Returns
    -------
    Path of the report.
    """
    import jinja2

    from . import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = [r for r in records if r.score is not None]
    labels = {r.label for r in scored if r.label is not None}
    labelled = classes is None and "good" in labels and len(labels) > 1
    if classes is not None:
        counts = {c: sum(r.verdict == c for r in scored) for c in classes}
        extra = {**{f"class {c}": n for c, n in counts.items()}, **(extra or {})}
    roc = _roc(scored) if labelled else None
    env = jinja2.Environment(autoescape=True)
    page = env.from_string(_TEMPLATE).render(
        title=title,
        model=model,
        threshold=threshold,
        n_total=len(records),
        n_scored=len(scored),
        n_errors=len(records) - len(scored),
        n_defect=sum(r.verdict == "defect" for r in scored),
        auc=None if roc is None else roc[1],
        hist=_histogram(scored, threshold, labelled) if scored and threshold is not None else None,
        roc=None if roc is None else roc[0],
        worst=sorted(scored, key=lambda r: r.score if classes is not None else -r.score)[:n_worst],
        classifier=classes is not None,
        errors=[r for r in records if r.error],
        rows=records,
        labelled=labelled,
        extra=list((extra or {}).items()),
        version=__version__,
        short=lambda f: "/".join(Path(f).parts[-2:]),
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
