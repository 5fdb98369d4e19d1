"""``--detector auto``: choose a configuration from good images alone.

No defective part is needed.  Part of the unit space is held out; two copies
of every held-out image get one planted anomaly each, kinds and extents
(3, 5 and 8 % of the shorter side) in turn: surface defects from
:mod:`gaikan.synth.anomalies` (scratches, cracks, spots, stains, noise
patches, cut-paste, local blur and brightness changes) and two structural
ones defined here, a block of the part *shifted* by a fraction of its size
(a misplaced component) and a block whose structure is *missing* (filled by
the smooth shading around it).  The held-out goods and their damaged copies
form a test set with exact masks.  Candidate configurations are fitted on
the rest, cheapest first, while the time budget lasts, and scored
by image AUROC and *pointing* (the share of damaged copies whose map peaks
inside the planted mask) on that test set.  The winner maximises
``AUROC + 0.1 · pointing`` (accuracy first, localisation as the tie-break)
and is refitted on every good image.

Everything here is orchestration: it calls detectors, the planting
functions and the metrics, and holds no maths of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AutoResult",
    "Candidate",
    "default_candidates",
    "explain",
    "prior_cost",
    "select",
    "working_shape",
    "write_table",
]

#: Weight of pointing beside image AUROC in the choice.
POINTING_WEIGHT = 0.1
#: Prior cost of kinds not tried yet in a run: (fixed seconds, seconds per
#: image at 100×100 pixels, scaled by pixel count), fit + score, on 2 CPU
#: cores.  Used to order the candidates (cheapest first) and to decide
#: whether one still fits in the budget; once a kind has run, its measured
#: cost replaces the prior.  The deep kinds' fixed part is the backbone's
#: construction (~10 s for the first deep kind of a process).  Re-measured at
#: stop 21 with ``benchmarks/bench_auto.py`` on a quiet machine (ELPV, 384
#: images in the choice: PaDiM 20.8 s, PatchCore 10.2 s; the ten synthetic
#: sets, 96 images: PaDiM 3.1–5.8 s, PatchCore 1.5–2.0 s with the backbone
#: built) and set ~1.5× above those rates, so that a loaded machine still
#: keeps inside the budget; the earlier rates (0.02 and 0.025, measured at
#: load average 7–18 and before PatchCore's faster search) predicted 58 s
#: and 71 s on that ELPV choice, so a 60 s budget skipped both.
COST_PRIOR: dict[str, tuple[float, float]] = {
    "rt": (0.5, 0.0015),
    "soart3map": (0.5, 0.003),
    "soartc": (2.0, 0.02),
    "padim": (10.0, 0.006),
    "patchcore": (8.0, 0.007),
    # PaDiM on 256-px tiles (overlap 32) of large frames, one unit space of every
    # tile: 80 parts of 512 × 1280 in 29–39 s (benchmarks/bench_elongated.py),
    # 0.0056–0.0074 s per 100² pixels
    "tiled": (10.0, 0.010),
}
#: Extra seconds per tile position of a tiled candidate with ``per_position``
#: (each position fits its own per-cell Gaussians, whatever the number of
#: images: PaDiM on 18 positions of 512 × 1280 parts, 42–45 s of fit for 8
#: or 28 parts).
TILE_POSITION_S = 2.5
#: Prior of a kind missing from :data:`COST_PRIOR`.
COST_UNKNOWN = (5.0, 0.2)
#: At most this many good images take part in the choice (a seeded subset;
#: the winner is still refitted on all of them): the ranking needs a few
#: hundred images, not thousands, and the budget then reaches the deep kinds.
MAX_CHOICE_IMAGES = 240
#: Kinds of anomaly planted, in turn, :data:`COPIES` per held-out image.
PLANTED = (
    "scratch",
    "shift",
    "spot",
    "noise",
    "missing",
    "cutpaste",
    "crack",
    "bright",
    "stain",
    "blur",
)
#: Damaged copies of each held-out image (each with another kind).
COPIES = 2
#: Extents of the planted anomalies (fraction of the shorter side), in turn:
#: real defects are mostly small (hairline cracks, pin-holes), and one large
#: size alone favours coarse configurations that miss them.
PLANTED_SIZES = (0.03, 0.05, 0.08)


#: Square candidates work at 256² at most: images whose longer side is this many
#: times longer are also tried on tiles at (nearly) full resolution, where thin
#: defects survive (:func:`working_shape`).
TILE_SHRINK = 3.0
#: Largest working image for the tiled candidates, in pixels (aspect kept) ...
MAX_WORKING_PIXELS = 1_000_000
#: ... and at most this many bytes for all the good images together (float64).
MAX_WORKING_BYTES = 2 * 10**9


@dataclass(frozen=True)
class Candidate:
    """One configuration: a registry kind, its parameters and the image size."""

    kind: str
    params: dict[str, Any]
    size: tuple[int, int]

    @property
    def label(self) -> str:
        ps = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}[{ps}]@{self.size[0]}x{self.size[1]}"


@dataclass
class AutoResult:
    """What ``select`` tried and which configuration won.

    Attributes
    ----------
    best : Candidate
    model : fitted detector
        The winner refitted on every good image.
    rows : list of dict
        One per candidate tried: label, kind, params, size, image_auroc,
        pointing, objective, fit_s, ms_per_img, elapsed_s (the candidate's
        whole cost, resizing included), chosen, ``auroc_<kind>`` (the goods
        against each planted kind alone) and weakest_kind (and error).
    skipped : list of Candidate
        Not tried because the budget ran out.
    reason : str
        Why the winner won, in one English sentence (``explain(why, lang)``
        in another language).
    n_img : int
        Images each candidate was fitted on and scored on, together (the
        unit for the budget's cost estimates).
    why : dict
        The figures behind ``reason``: label, weight, n_held, n_planted,
        auroc, pointing, next_label, next_objective (None without a
        runner-up) and refit_n (None when the winner was refitted on every
        image, else how many it was fitted on).
    """

    best: Candidate
    model: Any
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Candidate] = field(default_factory=list)
    reason: str = ""
    n_img: int = 0
    why: dict[str, Any] = field(default_factory=dict)


def explain(why: dict[str, Any], lang: str | None = None) -> str:
    """Why the winner won, in one sentence of ``lang`` (default: the current language).

    ``why`` is :attr:`AutoResult.why`.
    """
    from .i18n import t

    nxt = ""
    if why.get("next_label") is not None:
        nxt = t(
            "auto.why_next", lang, label=why["next_label"], objective=f"{why['next_objective']:.3f}"
        )
    refit = "" if why.get("refit_n") is None else t("auto.why_not_refit", lang, n=why["refit_n"])
    return t(
        "auto.why",
        lang,
        label=why["label"],
        weight=why["weight"],
        n_held=why["n_held"],
        n_planted=why["n_planted"],
        auroc=f"{why['auroc']:.3f}",
        pointing=f"{why['pointing']:.2f}",
        next=nxt,
        refit=refit,
    )


def _deep_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "timm"))


def prior_cost(cand: Candidate, n_images: int) -> float:
    """Expected seconds to try ``cand`` on ``n_images`` images (:data:`COST_PRIOR`)."""
    fixed, rate = COST_PRIOR.get(cand.kind, COST_UNKNOWN)
    if cand.kind == "tiled" and cand.params.get("per_position", True):  # a unit space each
        from .tiling import tile_grid

        tile, overlap = int(cand.params.get("tile", 256)), int(cand.params.get("overlap", 32))
        fixed += TILE_POSITION_S * len(tile_grid(cand.size, tile, overlap))
    return fixed + rate * n_images * cand.size[0] * cand.size[1] / 1e4


def typical_shape(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The median height and the median width of some images' (H, W)."""
    mid = len(shapes) // 2
    return sorted(s[0] for s in shapes)[mid], sorted(s[1] for s in shapes)[mid]


def working_shape(shapes: Sequence[tuple[int, int]], n_images: int) -> tuple[int, int] | None:
    """The size to load good images at for the choice: None (256², the usual) unless large.

    Parameters
    ----------
    shapes : sequence of (int, int)
        Some of the images' (H, W) (:func:`gaikan.io.probe_shapes`).
    n_images : int
        How many good images will be loaded.

    Returns
    -------
    (int, int) or None
        For images whose longer side is at least :data:`TILE_SHRINK` × 256:
        their median size, scaled down (aspect kept) to at most
        :data:`MAX_WORKING_PIXELS` and to :data:`MAX_WORKING_BYTES` for all
        of them, each side at least 256 (one tile); the square candidates
        resize from it, the tiled ones work on it.
    """
    if not shapes:
        return None
    h, w = typical_shape(shapes)
    if max(h, w) < TILE_SHRINK * 256:
        return None
    cap = min(MAX_WORKING_PIXELS, MAX_WORKING_BYTES / (8 * max(1, n_images)))
    scale = min(1.0, float(np.sqrt(cap / (h * w))))
    return max(256, int(h * scale)), max(256, int(w * scale))  # a tile fits either way


def default_candidates(
    deep: bool | None = None, shape: tuple[int, int] | None = None
) -> list[Candidate]:
    """The configurations tried, cheapest first by :func:`prior_cost`.

    Deep ones only with gaikan[deep]; with images of ``shape`` (the working
    size) whose longer side is :data:`TILE_SHRINK` × 256 or more, also PaDiM
    on 256-px tiles at that size (thin defects vanish in a 256² resize:
    ``benchmarks/bench_elongated.py``).
    """
    px = [
        Candidate("soartc", {}, (100, 100)),
        Candidate("rt", {}, (100, 100)),
        Candidate("soart3map", {}, (100, 100)),
        Candidate("soartc", {"kernel": 8, "stride": 4}, (128, 128)),
        Candidate("rt", {"kernel": 8, "stride": 4}, (128, 128)),
    ]
    if deep if deep is not None else _deep_available():
        px += [
            Candidate("padim", {}, (256, 256)),
            Candidate("patchcore", {}, (256, 256)),
        ]
        if shape is not None and max(shape) >= TILE_SHRINK * 256:
            # one unit space of every tile: per tile position (18 on 512 × 1280 parts)
            # PaDiM peaked at 5.5 GB (13 GB loading its 3 GB file) against 3.1–3.5 GB,
            # 3-4x slower, for AUROC 0.978 / 0.850 against 0.963 / 0.890
            # (benchmarks/bench_elongated.py)
            tiles = {"detector": "padim", "tile": 256, "overlap": 32, "per_position": False}
            px.append(Candidate("tiled", tiles, (int(shape[0]), int(shape[1]))))
    return sorted(px, key=lambda c: prior_cost(c, 100))


def _resize(images: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if images.shape[1:] == tuple(size):
        return images
    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    out = np.empty((len(images), *size), dtype=np.float64)
    for i, im in enumerate(images):
        pil = Image.fromarray(np.asarray(im, dtype=np.float32), mode="F")
        out[i] = np.asarray(pil.resize((size[1], size[0]), mode))
    return out


def _block(shape: tuple[int, int], rng: np.random.Generator, size: float) -> tuple[int, ...]:
    """A random block (top, left, height, width) about ``1.5 · size`` of each side."""
    h, w = shape
    bh = int(min(h // 2, max(4, round(1.5 * size * h * rng.uniform(0.8, 1.25)))))
    bw = int(min(w // 2, max(4, round(1.5 * size * w * rng.uniform(0.8, 1.25)))))
    return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw


def _shift(img: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """A block of the part displaced by 25–50 % of its size (a misplaced component)."""
    h, w = img.shape
    y, x, bh, bw = _block(img.shape, rng, size)
    ang = rng.uniform(0, 2 * np.pi)
    frac = rng.uniform(0.25, 0.5)
    y1 = int(np.clip(y + round(frac * bh * np.sin(ang)), 0, h - bh))
    x1 = int(np.clip(x + round(frac * bw * np.cos(ang)), 0, w - bw))
    out = img.copy()
    out[y1 : y1 + bh, x1 : x1 + bw] = img[y : y + bh, x : x + bw]
    return out


def _missing(img: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """A block whose structure is gone: the image's smooth shading there."""
    from scipy import ndimage

    y, x, bh, bw = _block(img.shape, rng, size)
    smooth = ndimage.gaussian_filter(img, max(bh, bw) / 2.0, mode="reflect")
    out = img.copy()
    out[y : y + bh, x : x + bw] = smooth[y : y + bh, x : x + bw]
    return out


def _plant(img: np.ndarray, kind: str, rng: np.random.Generator, size: float) -> tuple:
    """One anomaly of ``kind`` (a structural one here, else :func:`gaikan.synth.anomalies.plant`):
    image and mask (the pixels changed by more than half a grey level)."""
    from .synth.anomalies import plant

    local = {"shift": _shift, "missing": _missing}.get(kind)
    if local is None:
        return plant(img, kind, rng, size=size)
    for _ in range(5):
        out = local(img, rng, size)
        mask = np.abs(out - img) > 0.5
        if mask.any():
            return out, mask
    return plant(img, "spot", rng, size=size)  # a flat image: nothing to shift


def _planted_test_set(
    held: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Held-out goods and :data:`COPIES` damaged copies of each.

    Returns
    -------
    images : ndarray, shape (n, H, W)
    labels : ndarray of int, shape (n,)
        0 good, 1 planted.
    masks : ndarray of bool, shape (n, H, W)
    kinds : ndarray of str, shape (n,)
        The planted kind ("" for the goods).
    """
    rng = np.random.default_rng(seed)
    bad, masks, kinds = [], [], []
    for i, img in enumerate(held):
        for j in range(COPIES):
            k = COPIES * i + j  # 10 kinds, 3 sizes: every kind meets every size
            kind, size = PLANTED[k % len(PLANTED)], PLANTED_SIZES[k % len(PLANTED_SIZES)]
            out, mask = _plant(img, kind, rng, size)
            bad.append(out)
            masks.append(mask)
            kinds.append(kind)
    images = np.concatenate([held, np.stack(bad)])
    labels = np.r_[np.zeros(len(held), int), np.ones(len(bad), int)]
    all_masks = np.concatenate([np.zeros(held.shape, bool), np.stack(masks)])
    return images, labels, all_masks, np.array([""] * len(held) + kinds)


def _auroc_by_kind(labels: np.ndarray, kinds: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image AUROC of the goods against each planted kind alone, by kind.

    The pooled AUROC is their mean weighted by each kind's count (every
    planted copy is compared with the same goods), so these say which kinds
    a configuration's score rests on.
    """
    from .metrics import roc_auc

    good = labels == 0
    out = {}
    for k in PLANTED:
        planted = kinds == k
        if planted.any():
            out[k] = roc_auc(labels[good | planted], scores[good | planted])
    return out


def _evaluate(cand: Candidate, fit_set: np.ndarray, test: tuple, seed: int) -> dict[str, Any]:
    from .detectors.registry import create
    from .metrics import roc_auc

    images, labels, masks, kinds = test
    det = create(cand.kind, **cand.params)
    if "random_state" in det.get_params():
        det.set_params(random_state=seed)
    t0 = time.perf_counter()
    det.fit(_resize(fit_set, cand.size))
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = det.detect(_resize(images, cand.size))
    ms = 1e3 * (time.perf_counter() - t0) / len(images)
    small = _resize(masks[labels == 1].astype(np.float64), cand.size, nearest=True) > 0.5
    maps = res.maps[labels == 1]
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    hits = small.reshape(len(small), -1)[np.arange(len(small)), peaks]
    auroc = roc_auc(labels, res.scores)
    pointing = float(hits.mean())
    by_kind = _auroc_by_kind(labels, kinds, res.scores)
    weakest = min(by_kind, key=lambda k: by_kind[k])
    return {
        "image_auroc": auroc,
        "pointing": pointing,
        "objective": auroc + POINTING_WEIGHT * pointing,
        "fit_s": fit_s,
        "ms_per_img": ms,
        "weakest_kind": weakest,
        **{f"auroc_{k}": v for k, v in by_kind.items()},
    }


def select(
    good: np.ndarray,
    *,
    budget_s: float = 120.0,
    seed: int = 0,
    holdout: float = 0.3,
    candidates: Sequence[Candidate] | None = None,
    log: Callable[[str], None] | None = None,
) -> AutoResult:
    """Choose and fit a configuration from good images alone.

    Parameters
    ----------
    good : ndarray, shape (n, H, W), 0–255
        Good images at a working resolution (each candidate resizes them
        to its own size; anomalies are planted at this one), n ≥ 8.  Large
        ones (:func:`working_shape`) add a tiled candidate by default.  At
        most :data:`MAX_CHOICE_IMAGES` of them (a seeded subset) take part
        in the choice; the winner is refitted on all.
    budget_s : float
        Seconds for the whole choice: a candidate is started only when its
        expected cost (measured for kinds already tried, else
        :data:`COST_PRIOR`) fits in what is left, and the winner is refitted
        on every image only when that fits too (else it keeps the fit on the
        images not held out).
    seed : int
        Seeds the hold-out split, the planted anomalies and the
        candidates' ``random_state``.
    holdout : float
        Share of the good images held out (at least 3 of them).
    candidates : sequence of Candidate, optional
        Default :func:`default_candidates`, cheapest first.
    log : callable, optional
        Called with one line per candidate.

    Returns
    -------
    AutoResult
    """
    from .detectors.registry import create
    from .errors import ParameterError

    good = np.asarray(good, dtype=np.float64)
    n = len(good)
    n_held = max(3, round(holdout * n))
    if n - n_held < 5:
        raise ParameterError(f"--detector auto needs at least {n_held + 5} good images, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_choice = min(n, MAX_CHOICE_IMAGES)
    n_held = min(n_held, max(3, round(holdout * n_choice)))
    fit_set, held = good[order[n_held:n_choice]], good[order[:n_held]]
    test = _planted_test_set(held, seed)
    shape = (int(good.shape[1]), int(good.shape[2]))
    cands = list(candidates if candidates is not None else default_candidates(shape=shape))
    rows: list[dict[str, Any]] = []
    skipped: list[Candidate] = []
    t_start = time.perf_counter()
    per_px: dict[str, float] = {}  # measured seconds per image-pixel, by kind
    n_img = len(fit_set) + len(test[0])

    def cost(c: Candidate) -> float:
        if c.kind in per_px:
            return per_px[c.kind] * n_img * c.size[0] * c.size[1]
        return prior_cost(c, n_img)

    for cand in cands:
        spent = time.perf_counter() - t_start
        if spent + cost(cand) > budget_s:
            skipped.append(cand)
            continue
        row: dict[str, Any] = {
            "label": cand.label,
            "kind": cand.kind,
            "params": cand.params,
            "size": f"{cand.size[0]}x{cand.size[1]}",
        }
        t0 = time.perf_counter()
        try:
            row.update(_evaluate(cand, fit_set, test, seed))
        except (ValueError, ImportError, MemoryError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["elapsed_s"] = time.perf_counter() - t0
        per_px[cand.kind] = row["elapsed_s"] / (n_img * cand.size[0] * cand.size[1])
        rows.append(row)
        if log is not None:
            log(_row_line(row))
    ok = [r for r in rows if "error" not in r]
    if not ok:
        raise ParameterError("no candidate configuration could be fitted on these images")
    best_row = max(ok, key=lambda r: r["objective"])
    best = cands[[c.label for c in cands].index(best_row["label"])]
    for r in rows:
        r["chosen"] = r is best_row
    model = create(best.kind, **best.params)
    if "random_state" in model.get_params():
        model.set_params(random_state=seed)
    spent = time.perf_counter() - t_start
    refit = spent + best_row["fit_s"] * n / len(fit_set) <= budget_s
    model.fit(_resize(good if refit else fit_set, best.size))
    runner_up = sorted(ok, key=lambda r: -r["objective"])[1:2]
    why = {
        "label": best.label,
        "weight": POINTING_WEIGHT,
        "n_held": n_held,
        "n_planted": COPIES * n_held,
        "auroc": best_row["image_auroc"],
        "pointing": best_row["pointing"],
        "next_label": runner_up[0]["label"] if runner_up else None,
        "next_objective": runner_up[0]["objective"] if runner_up else None,
        "refit_n": None if refit else len(fit_set),
    }
    return AutoResult(best, model, rows, skipped, explain(why, "en"), n_img, why)


def _row_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['label']:<40} error: {r['error']}"
    weakest = r["weakest_kind"]
    return (
        f"{r['label']:<40} AUROC {r['image_auroc']:.3f}  pointing {r['pointing']:.2f}  "
        f"weakest {weakest} {r['auroc_' + weakest]:.3f}  "
        f"fit {r['fit_s']:.1f} s  {r['ms_per_img']:.1f} ms/img"
    )


def write_table(path: Any, result: AutoResult) -> None:
    """``auto.csv``: one row per candidate tried (and the skipped ones)."""
    import csv

    cols = [
        "label",
        "kind",
        "size",
        "image_auroc",
        "pointing",
        "objective",
        "fit_s",
        "ms_per_img",
        "elapsed_s",
        "chosen",
        "weakest_kind",
        *(f"auroc_{k}" for k in PLANTED),
        "error",
    ]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
        for c in result.skipped:
            w.writerow({"label": c.label, "kind": c.kind, "error": "skipped: time budget spent"})
