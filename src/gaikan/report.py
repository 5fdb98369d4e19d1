"""The HTML reports a quality engineer mails to a colleague.

One page builder (:func:`html_page`, shared CSS, images embedded as data
URIs, so a report is one self-contained file) serves the inspection report
(:func:`write_report`) and the training report of ``gaikan train``.

Overlays in the inspection report follow the one colour policy of
:mod:`gaikan.inspection.display` (calibrated map, threshold = the jump from
teal to yellow), shown by a colour bar with the threshold marked.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError
from .i18n import current_lang, normalize_lang, t
from .inspection import Inspection, colour_bar_svg

__all__ = [
    "fig_png",
    "html_page",
    "overlay_rgb",
    "write_auto_report",
    "write_report",
]

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#1a7f37;font-weight:600}.defect{color:#c62828;font-weight:600}
.error{color:#8a6d00;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{width:200px;font-size:.8em}
.card img{width:200px;image-rendering:pixelated;border:1px solid #999}
.card div{overflow-wrap:anywhere}
.summary td:first-child{font-weight:600}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px}
.num{text-align:right;font-variant-numeric:tabular-nums}.chosen{background:#e8f5e9}
"""


def html_page(title: str, body: str, lang: str = "en") -> str:
    """A complete, self-contained HTML page around ``body`` (already escaped HTML)."""
    from ._version import __version__

    return (
        f'<!doctype html>\n<html lang="{html.escape(lang)}"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>\n{body}\n"
        f'<p style="color:#777;font-size:.8em">gaikan {__version__}</p></body></html>\n'
    )


def fig_png(fig: Any) -> str:
    """A matplotlib figure as base64 PNG (for ``<img src="data:image/png;base64,…">``)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def overlay_rgb(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """A raw map (e.g. a training sample's explanation) in jet over a grey image.

    For training reports only; inspection overlays use
    :func:`gaikan.inspection.overlay_rgb` (calibrated, threshold-anchored).

    Parameters
    ----------
    image, amap : ndarray, shape (H, W)
    vmin, vmax : float, optional
        Linear colour range (default: the map's own range).

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    import matplotlib

    m = np.asarray(amap, dtype=np.float64)
    if np.shape(image) != m.shape:
        raise ParameterError(f"image {np.shape(image)} and map {m.shape} differ in shape")
    lo = float(m.min()) if vmin is None else float(vmin)
    hi = float(m.max()) if vmax is None else float(vmax)
    norm = np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)
    heat = matplotlib.colormaps["jet"](norm)[..., :3] * 255
    grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255)[..., None]
    return np.clip((1 - alpha) * grey + alpha * heat, 0, 255).round().astype(np.uint8)


# -- the inspection report ------------------------------------------------------
def _histogram(scored: Sequence[Inspection], threshold: float, labelled: bool, log: bool) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    vals = np.array([r.score for r in scored], dtype=float)
    bins: Any
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    if log:
        lo = max(min(vals.min(), threshold) * 0.8, 1e-3)
        hi = max(vals.max(), threshold) * 1.25
        bins = np.geomspace(lo, hi, 40)
    else:
        lo, hi = 0.0, max(1.0, vals.max())
        bins = np.linspace(lo, hi, 41)
    if labelled:
        groups = [
            ("good (folder)", [r.score or 0.0 for r in scored if r.label == "good"], "tab:blue"),
            ("defect (folder)", [r.score or 0.0 for r in scored if r.label != "good"], "tab:red"),
        ]
    else:
        groups = [
            ("ok", [r.score or 0.0 for r in scored if r.verdict == "ok"], "tab:blue"),
            ("flagged", [r.score or 0.0 for r in scored if r.verdict == "defect"], "tab:red"),
        ]
    for name, v, c in groups:
        if v:
            ax.hist(np.clip(v, lo, hi), bins=bins, alpha=0.6, label=f"{name} ({len(v)})", color=c)
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3g}")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("score (higher = worse" + (", log scale)" if log else ")"))
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return fig_png(fig)


def _roc(scored: Sequence[Inspection]) -> tuple[str, float] | None:
    from .metrics import roc_auc, roc_curve

    y = np.array([r.label != "good" for r in scored])
    if y.size == 0 or y.all() or not y.any():
        return None
    s = np.array([r.score for r in scored], dtype=float)
    auc = roc_auc(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot(fpr, tpr, color="tab:red", lw=2)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, AUROC = {auc:.3f}")
    return fig_png(fig), auc


def _embed(out: Path, r: Inspection) -> str:
    if not r.overlay:
        return ""
    try:
        data = (out / r.overlay).read_bytes()
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _card(out: Path, r: Inspection, lang: str) -> str:
    e = html.escape
    src = _embed(out, r)
    alt = e(t("report.overlay_alt", lang, file=r.file))
    img = f'<img src="{src}" alt="{alt}">' if src else ""
    short = "/".join(Path(r.file).parts[-2:])
    what = f"{e(t('verdict.' + r.verdict, lang))} · {r.score:.4g}"
    if r.cls is not None:
        what += f" · {e(r.cls)} ({r.confidence:.2f})"
    if r.label:
        what += f" · {e(t('report.folder_label', lang, label=r.label))}"
    return (
        f'<div class="card">{img}<div title="{e(r.file)}">{e(short)}</div>'
        f'<div class="{r.verdict}">{what}</div></div>'
    )


def _gallery(out: Path, title: str, items: Sequence[Inspection], lang: str, note: str = "") -> str:
    if not items:
        return ""
    cards = "\n".join(_card(out, r, lang) for r in items)
    return f'<h2>{html.escape(title)}</h2>{note}<div class="gallery">{cards}</div>'


def _confusion(scored: Sequence[Inspection], errors: Sequence[Inspection], lang: str) -> str:
    def n(label_good: bool, verdict: str) -> int:
        pool = errors if verdict == "error" else scored
        return sum((r.label == "good") == label_good and r.verdict == verdict for r in pool)

    e = html.escape
    rows = "".join(
        f"<tr><td>{e(t(name, lang))}</td><td>{n(good, 'ok')}</td><td>{n(good, 'defect')}</td>"
        f"<td>{n(good, 'error')}</td></tr>"
        for name, good in (("report.good_folder", True), ("report.defect_folder", False))
    )
    verdicts = "".join(f"<th>{e(t('verdict.' + v, lang))}</th>" for v in ("ok", "defect", "error"))
    return (
        f"<h2>{e(t('report.confusion', lang))}</h2><table>"
        f"<tr><th>{e(t('report.folder_verdict', lang))}</th>{verdicts}</tr>{rows}</table>"
    )


def _summary_rows(rows: list[tuple[str, str]]) -> str:
    return (
        '<table class="summary">'
        + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def write_report(
    out_dir: str | os.PathLike,
    results: Sequence[Inspection],
    *,
    threshold: float,
    model: str = "",
    title: str | None = None,
    family: str = "detector",
    n_gallery: int = 24,
    incomplete: str | None = None,
    extra: dict[str, Any] | None = None,
    lang: str | None = None,
) -> Path:
    """Write ``report.html`` into ``out_dir`` and return its path.

    The page: summary (with confusion counts and the ROC curve when folder
    labels exist), score histogram, colour bar with the threshold marked,
    galleries of false alarms, misses and the worst parts (overlays
    embedded), the files that could not be inspected, and every result.

    Parameters
    ----------
    out_dir : path
        Folder of the report; overlays named by results are read from it.
    results : sequence of Inspection
    threshold : float
        The threshold the verdicts were made with.
    title : str, optional
        The page title (default "gaikan inspection report", translated).
    family : {"detector", "classifier"}
    incomplete : str, optional
        Why the run stopped early (the page says the run is incomplete).
    extra : dict, optional
        More summary rows.
    lang : {"en", "ja"}, optional
        Language of the page (default :func:`gaikan.i18n.current_lang`); the
        plots' axis labels stay English (no CJK font is assumed).
    """
    from .i18n import current_lang, normalize_lang

    lang = normalize_lang(lang) or current_lang()
    e = html.escape
    title = title if title is not None else t("report.title", lang)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = [r for r in results if not r.is_error]
    errors = [r for r in results if r.is_error]
    labels = {r.label for r in results if r.label is not None}
    labelled = "good" in labels and len(labels) > 1
    classifier = family == "classifier"
    score_meaning = t("report.score_classifier" if classifier else "report.score_anomaly", lang)
    rows = [
        (t("report.model", lang), model),
        (t("report.score", lang), t("report.score_value", lang, meaning=score_meaning)),
        (
            t("report.threshold", lang),
            t("report.threshold_value", lang, threshold=f"{threshold:.4g}"),
        ),
        (
            t("report.images", lang),
            t(
                "report.images_value",
                lang,
                total=len(results),
                scored=len(scored),
                errors=len(errors),
            ),
        ),
        (t("report.flagged", lang), str(sum(r.verdict == "defect" for r in scored))),
    ]
    if classifier:
        classes = sorted({r.cls for r in scored if r.cls is not None})
        rows += [
            (t("report.class_row", lang, cls=c), str(sum(r.cls == c for r in scored)))
            for c in classes
        ]
    roc = _roc([r for r in scored if r.label is not None]) if labelled else None
    if roc is not None:
        rows.append((t("report.auroc", lang), f"{roc[1]:.4f}"))
    rows += [(str(k), str(v)) for k, v in (extra or {}).items()]
    body = []
    if incomplete:
        detail = t("report.incomplete_detail", lang, why=incomplete, n=len(results))
        body.append(f'<p class="warn"><b>{e(t("report.incomplete", lang))}</b> {e(detail)}</p>')
    body.append(_summary_rows(rows))
    if labelled:
        body.append(_confusion(scored, errors, lang))
    if scored:
        body.append(
            f'<h2>{e(t("report.scores", lang))}</h2><img alt="{e(t("report.histogram_alt", lang))}" '
            f'src="data:image/png;base64,{_histogram(scored, threshold, labelled, log=not classifier)}">'
        )
        if roc is not None:
            body.append(f'<img alt="ROC curve" src="data:image/png;base64,{roc[0]}">')
    body.append(
        f"<h2>{e(t('report.overlays', lang))}</h2><p>{e(t('report.overlays_text', lang))} "
        f"<b>{e(t('report.overlays_rule', lang))}</b></p>" + colour_bar_svg(threshold, lang=lang)
    )
    key = lambda r: -(r.score or 0.0)
    false_alarms = sorted(
        [r for r in scored if r.label == "good" and r.verdict == "defect"], key=key
    )
    misses = sorted(
        [r for r in scored if r.label not in (None, "good") and r.verdict == "ok"], key=key
    )
    galleries = (
        (t("report.false_alarms", lang, n=len(false_alarms)), false_alarms[:n_gallery]),
        (t("report.misses", lang, n=len(misses)), misses[:n_gallery]),
        (t("report.worst", lang), sorted(scored, key=key)[:n_gallery]),
    )
    for name, items in galleries:
        body.append(_gallery(out, name, items, lang))
    col = {k: e(t("report.col_" + k, lang)) for k in ("file", "problem", "verdict", "score")}
    col.update({k: e(t("report.col_" + k, lang)) for k in ("peak", "class", "folder")})
    if errors:
        body.append(
            f"<h2>{e(t('report.errors', lang))}</h2><table>"
            f"<tr><th>{col['file']}</th><th>{col['problem']}</th></tr>"
            + "".join(
                f'<tr><td>{html.escape(r.file)}</td><td class="error">{html.escape(r.error or "")}'
                "</td></tr>"
                for r in errors
            )
            + "</table>"
        )
    head = (
        f"<tr><th>{col['file']}</th><th>{col['verdict']}</th><th>{col['score']}</th>"
        f"<th>{col['peak']}</th>"
    )
    head += f"<th>{col['class']}</th>" if classifier else ""
    head += f"<th>{col['folder']}</th></tr>" if labelled else "</tr>"
    trs = []
    for r in results:
        s = "" if r.score is None else f"{r.score:.4g}"
        pk = "" if r.peak_row is None else f"{r.peak_row}, {r.peak_col}"
        word = e(t("verdict." + r.verdict, lang))
        cells = f'<td>{html.escape(r.file)}</td><td class="{r.verdict}">{word}</td>'
        cells += f"<td>{s}</td><td>{pk}</td>"
        cells += f"<td>{html.escape(r.cls or '')}</td>" if classifier else ""
        cells += f"<td>{html.escape(r.label or '')}</td>" if labelled else ""
        trs.append(f"<tr>{cells}</tr>")
    body.append(f"<h2>{e(t('report.results', lang))}</h2><table>{head}{''.join(trs)}</table>")
    path = out / "report.html"
    page = html_page(title, "\n".join(b for b in body if b), lang=lang)
    path.write_text(page, encoding="utf-8")
    return path


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else format(float(value), fmt)


def write_auto_report(
    path: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]],
    kinds: Sequence[str],
    chosen: str,
    reason: str,
    skipped: Sequence[str] = (),
    lang: str | None = None,
) -> Path:
    """The page of ``gaikan fit --detector auto``: what was tried, what won and why.

    Parameters
    ----------
    path : path-like
        The HTML file to write.
    rows : sequence of dict
        One per candidate tried (:attr:`gaikan.autoselect.AutoResult.rows`):
        ``label``, ``image_auroc``, ``pointing``, ``objective``, ``fit_s``,
        ``ms_per_img``, ``weakest_kind``, ``auroc_<kind>``, or ``error``.
    kinds : sequence of str
        The planted kinds, in column order.
    chosen, reason : str
        The winner's label and why it won.
    skipped : sequence of str
        Labels not tried (budget spent).
    lang : {"en", "ja"}, optional
        Default: :func:`gaikan.i18n.current_lang`.

    Returns
    -------
    Path
    """
    esc = html.escape
    lang = normalize_lang(lang) or current_lang()
    head = [
        t("auto.col_config", lang),
        t("auto.col_auroc", lang),
        t("auto.col_pointing", lang),
        t("auto.col_objective", lang),
        t("auto.col_weakest", lang),
        *kinds,
        t("auto.col_fit", lang),
        t("auto.col_ms", lang),
    ]

    def spanned(label: str, text: str, cls: str = "") -> str:
        """A row whose label is followed by one message across every other column."""
        return f"<tr{cls}><td>{esc(label)}</td><td colspan={len(head) - 1}>{esc(text)}</td></tr>"

    body = []
    for r in rows:
        cls = ' class="chosen"' if r.get("label") == chosen else ""
        if "error" in r:
            body.append(spanned(r["label"], t("auto.error", lang, error=r["error"]), cls))
            continue
        nums = [
            _num(r.get("image_auroc"), ".3f"),
            _num(r.get("pointing"), ".2f"),
            _num(r.get("objective"), ".3f"),
        ]
        per_kind = [_num(r.get(f"auroc_{k}"), ".3f") for k in kinds]
        tail = [_num(r.get("fit_s"), ".1f"), _num(r.get("ms_per_img"), ".1f")]
        body.append(
            f"<tr{cls}><td>{esc(r['label'])}</td>"
            + "".join(f'<td class="num">{v}</td>' for v in nums)
            + f"<td>{esc(str(r.get('weakest_kind', '')))}</td>"
            + "".join(f'<td class="num">{v}</td>' for v in per_kind + tail)
            + "</tr>"
        )
    body += [spanned(label, t("auto.skipped", lang)) for label in skipped]
    summary = [(t("auto.chosen", lang), chosen), (t("auto.reason", lang), reason)]
    page = html_page(
        t("auto.title", lang),
        _summary_rows(summary)
        + f"<h2>{esc(t('auto.by_kind', lang))}</h2><table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in head)
        + "</tr>"
        + "".join(body)
        + f"</table><p>{esc(t('auto.note', lang))}</p>",
        lang=lang,
    )
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
