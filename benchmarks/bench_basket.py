"""Deep detector defaults on a basket of data sets — one command, one table.

Usage::

    python benchmarks/bench_basket.py                 # full basket, 256², 2 threads
    python benchmarks/bench_basket.py --quick         # smoke run (small counts)
    python benchmarks/bench_basket.py --configs padim-v0,padim-23s8 --no-timing

Rows are detector configurations (:data:`CONFIGS`), columns image AUROC on

- ``elpv`` / ``elpv-mono`` / ``elpv-poly``: ELPV, anchor protocol (good
  cells split 60/40 with seed 0, test = the rest + every defective cell),
  images stretched to 256×256;
- ``conn-top`` / ``conn-obl``: synthetic connectors (numpy renderer, mixed
  layout), 60 good images to fit, 40 good + 40 defective (8 per defect
  mode) to test;
- ``textures``: the mean over :data:`gaikan.synth.textures.BASKET` (8
  texture × scale × defect-size data sets), each 40 good to fit, 20 good
  + 20 defective (5 per defect kind) to test;

then ``mean Δ`` and ``worst Δ``: the mean and the most negative AUROC
difference over the six columns against the same family's ``-v0`` row
(the defaults before issue 14).

Backbone features are computed once per data set — every layer of
EfficientNet-Lite0 at once — and cached as float16 ``.npz`` under
``--cache`` (default ``$GAIKAN_CACHE/basket`` or ``~/.cache/gaikan/basket``),
keyed by the images' hash, so trying layer subsets, strides or PatchCore
settings costs no re-extraction.  The detectors are the library's own
classes; only their feature extractor is swapped for the cache (the
float16 storage changes AUROCs by < 0.001).

Timing columns (``fit s``, ``ms/img``, ``RSS MB``) come from the real
detector — backbone included, no cache — in a freshly spawned process
(so peak RSS is its own): fit on the 904 ELPV training cells, then
``anomaly_score`` in batches of 16 over ``--time-images`` test cells, on
``--threads`` threads.  ``os.getloadavg()`` is printed with them: on a busy
machine the times are upper bounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 256
ALL_LAYERS = (1, 2, 3, 4)
#: The detectors' default backbone (a config's ``backbone`` parameter picks another).
BACKBONE = "efficientnet_lite0"

#: name → (kind, params).  "-v0" rows are the defaults before issue 14.  Every
#: PaDiM row pins grid_sigma (its default changed from 0 to 1 with issue 14);
#: the anomalib row blurs by one stride-4 cell = anomalib's σ = 4 px map blur.
CONFIGS: dict[str, tuple[str, dict]] = {
    "padim": ("padim", {}),  # the class defaults, whatever they are now
    "patchcore": ("patchcore", {}),
    "padim-v0": (
        "padim",
        {"layers": (3, 4), "feature_stride": 16, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-23s8": (
        "padim",
        {"layers": (2, 3), "feature_stride": 8, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-234s8": (
        "padim",
        {"layers": (2, 3, 4), "feature_stride": 8, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-123s8": (
        "padim",
        {"layers": (1, 2, 3), "feature_stride": 8, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-124s8": (
        "padim",
        {"layers": (1, 2, 4), "feature_stride": 8, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-234s8-g1": (
        "padim",
        {"layers": (2, 3, 4), "feature_stride": 8, "n_features": 200, "grid_sigma": 1.0},
    ),
    "padim-234s8-r10": (
        "padim",
        {
            "layers": (2, 3, 4),
            "feature_stride": 8,
            "n_features": 200,
            "grid_sigma": 0.0,
            "reg_rel": 0.1,
        },
    ),
    "padim-234s16": (
        "padim",
        {"layers": (2, 3, 4), "feature_stride": 16, "n_features": 200, "grid_sigma": 0.0},
    ),
    "padim-124s4-anomalib": (
        "padim",
        {"layers": (1, 2, 4), "feature_stride": 4, "n_features": 100, "grid_sigma": 1.0},
    ),
    # other offline backbones at the default layers, grid and blur
    "padim-lite1": ("padim", {"backbone": "efficientnet_lite1"}),
    "padim-lite2": ("padim", {"backbone": "efficientnet_lite2"}),
    "padim-lite2-34s16": (
        "padim",
        {"backbone": "efficientnet_lite2", "layers": (3, 4), "feature_stride": 16},
    ),
    "patchcore-v0": (
        "patchcore",
        {
            "layers": (3, 4),
            "feature_stride": 16,
            "coreset_ratio": 0.1,
            "n_neighbors": 9,
            "search_dim": 0,
        },
    ),
    # the same bank, two-step search: candidates (the class default unless named) from its
    # leading principal directions
    "patchcore-sd128": ("patchcore", {"search_dim": 128}),
    "patchcore-sd32": ("patchcore", {"search_dim": 32}),
    "patchcore-sd64": ("patchcore", {"search_dim": 64}),
    "patchcore-sd32-m8": ("patchcore", {"search_dim": 32, "search_candidates": 8}),
    "patchcore-sd64-m16": ("patchcore", {"search_dim": 64, "search_candidates": 16}),
    "patchcore-sd48-m24": ("patchcore", {"search_dim": 48, "search_candidates": 24}),
    "patchcore-sd32-m24": ("patchcore", {"search_dim": 32, "search_candidates": 24}),
    "patchcore-c30": ("patchcore", {"coreset_ratio": 0.3}),
    "patchcore-c100": ("patchcore", {"coreset_ratio": 1.0}),
    "patchcore-34s16-c02": (
        "patchcore",
        {"layers": (3, 4), "feature_stride": 16, "coreset_ratio": 0.02, "n_neighbors": 9},
    ),
    "patchcore-34s16-c05": (
        "patchcore",
        {"layers": (3, 4), "feature_stride": 16, "coreset_ratio": 0.05, "n_neighbors": 9},
    ),
    "patchcore-34s16-c02-nn0": (
        "patchcore",
        {"layers": (3, 4), "feature_stride": 16, "coreset_ratio": 0.02, "n_neighbors": 0},
    ),
    "patchcore-23s16-c02": (
        "patchcore",
        {"layers": (2, 3), "feature_stride": 16, "coreset_ratio": 0.02, "n_neighbors": 9},
    ),
    "patchcore-234s16-c02": (
        "patchcore",
        {"layers": (2, 3, 4), "feature_stride": 16, "coreset_ratio": 0.02, "n_neighbors": 9},
    ),
    "patchcore-23s8-c01": (
        "patchcore",
        {"layers": (2, 3), "feature_stride": 8, "coreset_ratio": 0.01, "n_neighbors": 9},
    ),
}

DEFAULT_ROWS = (
    "padim-v0,padim-23s8,padim-234s8,padim-123s8,padim-124s8,padim-234s8-r10,padim-234s16,"
    "padim-234s8-g1,patchcore-v0,patchcore-34s16-c05,patchcore-34s16-c02,patchcore-34s16-c02-nn0"
)
COLUMNS = ("elpv", "elpv-mono", "elpv-poly", "conn-top", "conn-obl", "textures")


# -- data ----------------------------------------------------------------------------
@dataclass
class Task:
    """One train/test protocol on a source's images."""

    column: str
    source: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray


@dataclass
class Source:
    """Images that share one feature cache."""

    name: str
    images: np.ndarray  # (n, SIZE, SIZE) uint8
    tasks: list[Task] = field(default_factory=list)


def _elpv(quick: bool) -> Source:
    from gaikan.datasets import elpv_split, load_elpv

    d = load_elpv(size=SIZE)
    keep = np.arange(len(d.probs))
    if quick:
        keep = np.sort(np.random.default_rng(0).choice(keep, size=300, replace=False))
    probs, types = d.probs[keep], d.types[keep]
    src = Source("elpv", d.images[keep])
    labels = (probs > 0).astype(int)
    for col, cell in (("elpv", None), ("elpv-mono", "mono"), ("elpv-poly", "poly")):
        idx = np.arange(len(probs)) if cell is None else np.flatnonzero(types == cell)
        tr, te = elpv_split(probs[idx], seed=0)
        src.tasks.append(Task(col, "elpv", idx[tr], idx[te], labels[idx[te]]))
    return src


def _connectors(view: str, quick: bool) -> Source:
    from gaikan.synth import DEFAULT_DEFECTS, render_sample

    n_fit, n_good, per = (20, 10, 2) if quick else (60, 40, 8)
    imgs = [
        render_sample("good", view=view, size=SIZE, seed=0, split="train", index=i)[0]
        for i in range(n_fit)
    ]
    imgs += [render_sample("good", view=view, size=SIZE, seed=0, index=i)[0] for i in range(n_good)]
    for d in DEFAULT_DEFECTS:
        imgs += [render_sample(d, view=view, size=SIZE, seed=0, index=i)[0] for i in range(per)]
    n = len(imgs)
    col = "conn-top" if view == "top" else "conn-obl"
    src = Source(col, np.stack(imgs))
    labels = np.r_[np.zeros(n_good, int), np.ones(n - n_fit - n_good, int)]
    src.tasks.append(Task(col, col, np.arange(n_fit), np.arange(n_fit, n), labels))
    return src


def _textures(quick: bool) -> Source:
    from gaikan.synth.textures import BASKET, TEXTURE_DEFECTS, render_texture

    specs = BASKET[:2] if quick else BASKET
    n_fit, n_good, per = (20, 6, 2) if quick else (40, 20, 5)
    imgs: list[np.ndarray] = []
    tasks = []
    for spec in specs:
        s0 = len(imgs)
        imgs += [render_texture(spec, split="train", index=i)[0] for i in range(n_fit)]
        imgs += [render_texture(spec, index=i)[0] for i in range(n_good)]
        for d in TEXTURE_DEFECTS:
            imgs += [render_texture(spec, d, index=1000 + i)[0] for i in range(per)]
        n = len(imgs) - s0
        labels = np.r_[np.zeros(n_good, int), np.ones(n - n_fit - n_good, int)]
        tasks.append(
            Task(
                "textures",
                spec.name,
                s0 + np.arange(n_fit),
                s0 + np.arange(n_fit, n),
                labels,
            )
        )
    return Source("textures", np.stack(imgs), tasks)


#: Bump when the data sets above change (invalidates the image cache).
DATA_VERSION = 1


def load_sources(quick: bool, cache: Path | None = None) -> list[Source]:
    """The basket's images and tasks; cached as ``.npz`` (rendering takes minutes)."""
    makers = {
        "elpv": lambda: _elpv(quick),
        "conn-top": lambda: _connectors("top", quick),
        "conn-obl": lambda: _connectors("oblique", quick),
        "textures": lambda: _textures(quick),
    }
    out = []
    for name, make in makers.items():
        path = None if cache is None else cache / f"{name}-{SIZE}-images-v{DATA_VERSION}.npz"
        if path is not None and path.exists():
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                tasks = [
                    Task(c, s, z[f"train{i}"], z[f"test{i}"], z[f"labels{i}"])
                    for i, (c, s) in enumerate(meta)
                ]
                out.append(Source(name, z["images"], tasks))
            continue
        src = make()
        if path is not None:
            arrays: dict[str, Any] = {"images": src.images}
            arrays["meta"] = np.array(json.dumps([[t.column, t.source] for t in src.tasks]))
            for i, t in enumerate(src.tasks):
                arrays.update({f"train{i}": t.train, f"test{i}": t.test, f"labels{i}": t.labels})
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        out.append(src)
    return out


# -- feature cache ---------------------------------------------------------------------
def _digest(images: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest()[:12]


def cached_features(
    src: Source, cache: Path, threads: int, backbone: str = BACKBONE
) -> dict[int, np.ndarray]:
    """All layers of ``backbone`` for ``src.images``: {layer: (n, C, h, w) float16}."""
    tag = backbone.replace("efficientnet_", "")  # "lite0": the name of the first caches
    path = cache / f"{src.name}-{SIZE}-{tag}-{_digest(src.images)}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[f"l{k}"] for k in ALL_LAYERS}
    from gaikan.deep.features import FeatureExtractor

    fe = FeatureExtractor(
        backbone, layers=ALL_LAYERS, image_size=SIZE, num_threads=threads, batch_size=16
    )
    t0 = time.perf_counter()
    parts: list[list[np.ndarray]] = []
    for outs in fe.iter_batches(src.images):
        parts.append([o.numpy().astype(np.float16) for o in outs])
    feats = {k: np.concatenate([p[j] for p in parts]) for j, k in enumerate(ALL_LAYERS)}
    print(
        f"  {tag} features of {src.name}: {len(src.images)} images in "
        f"{time.perf_counter() - t0:.0f} s ({fe.runtime})",
        file=sys.stderr,
        flush=True,
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {f"l{k}": v for k, v in feats.items()}
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return feats


class CachedExtractor:
    """Stands in for :class:`gaikan.deep.features.FeatureExtractor` from cached maps.

    Images are found by the hash of their float32 bytes (what the
    detectors pass on), so any subset in any order works.
    """

    def __init__(self, images: np.ndarray, feats: dict[int, np.ndarray], layers, batch_size=16):
        import torch

        self.layers = tuple(int(v) for v in layers)
        self.image_size = (SIZE, SIZE)
        self.runtime = "cache"
        self.batch_size = batch_size
        self._feats = [feats[k] for k in self.layers]
        self.channels = [f.shape[1] for f in self._feats]
        self.reductions = [SIZE // f.shape[-1] for f in self._feats]
        self._torch = torch
        self._index = {_key(im): i for i, im in enumerate(images)}

    def iter_batches(self, X):
        X = np.asarray(X)
        for i in range(0, len(X), self.batch_size):
            rows = np.array([self._index[_key(x)] for x in X[i : i + self.batch_size]])
            yield [self._torch.from_numpy(f[rows].astype(np.float32)) for f in self._feats]


def _key(img: np.ndarray) -> bytes:
    return hashlib.blake2b(np.asarray(img, np.float32).tobytes(), digest_size=16).digest()


def _cached_detector(kind: str, params: dict, images, feats, threads: int):
    from gaikan.detectors.registry import create

    det = create(kind, **{**params, "num_threads": threads})
    fe = CachedExtractor(images, feats, det.layers)
    # the detectors build their extractor in _extractor(); answer with the cache
    det._extractor = lambda: fe
    return det


def evaluate(
    name: str, sources, feats, threads: int, cache: Path | None = None
) -> dict[str, float]:
    """Image AUROC of one configuration on every column.

    ``feats`` holds the default backbone's maps by source name; a config
    with another ``backbone`` has its maps loaded (or extracted) from ``cache``.
    """
    from gaikan.metrics import roc_auc

    kind, params = CONFIGS[name]
    backbone = params.get("backbone", BACKBONE)
    out: dict[str, list[float]] = {}
    for src in sources:
        if backbone == BACKBONE:
            maps = feats[src.name]
        else:
            assert cache is not None, "another backbone's maps need the cache folder"
            maps = cached_features(src, cache, threads, backbone)
        for t in src.tasks:
            det = _cached_detector(kind, params, src.images, maps, threads)
            det.fit(src.images[t.train])
            s = np.concatenate(
                [
                    det.anomaly_score(src.images[t.test[i : i + 64]])
                    for i in range(0, len(t.test), 64)
                ]
            )
            out.setdefault(t.column, []).append(roc_auc(t.labels, s))
    return {c: float(np.mean(v)) for c, v in out.items()}


# -- timing (real detector, spawned process) --------------------------------------------------
def _time_child(queue, name: str, threads: int, n_images: int) -> None:
    try:
        import torch

        from gaikan.datasets import elpv_split, load_elpv
        from gaikan.detectors.registry import create

        torch.set_num_threads(threads)
        d = load_elpv(size=SIZE)
        tr, te = elpv_split(d.probs, seed=0)
        kind, params = CONFIGS[name]
        det = create(kind, **{**params, "num_threads": threads, "batch_size": 16})
        t0 = time.perf_counter()
        det.fit(d.images[tr])
        fit_s = time.perf_counter() - t0
        test = d.images[te[:: max(1, len(te) // n_images)][:n_images]]
        det.anomaly_score(test[:16])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(test), 16):
            det.anomaly_score(test[i : i + 16])
        ms = 1e3 * (time.perf_counter() - t0) / len(test)
        from gaikan.benchmark import peak_rss_mb

        rss = peak_rss_mb()  # its own peak, not the parent's data set (ru_maxrss)
        queue.put({"fit_s": fit_s, "ms_img": ms, "rss_mb": rss, "load": os.getloadavg()[0]})
    except BaseException as exc:  # reported in the table
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def time_config(name: str, threads: int, n_images: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_time_child, args=(q, name, threads, n_images))
    p.start()
    res = q.get()
    p.join()
    return res


# -- table --------------------------------------------------------------------------------
def format_table(rows: list[dict]) -> str:
    head = "| config | " + " | ".join(COLUMNS) + " | mean Δ | worst Δ | fit s | ms/img | RSS MB |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        a = r["auroc"]
        cells = [f"{a[c]:.3f}" if c in a else "–" for c in COLUMNS]
        md = f"{r['mean_delta']:+.3f}" if "mean_delta" in r else "–"
        wd = f"{r['worst_delta']:+.3f}" if "worst_delta" in r else "–"
        t = r.get("timing") or {}
        if "error" in t:
            tc = [t["error"][:40], "", ""]
        elif t:
            tc = [f"{t['fit_s']:.0f}", f"{t['ms_img']:.1f}", f"{t['rss_mb']:.0f}"]
        else:
            tc = ["–", "–", "–"]
        out.append(f"| {r['name']} | " + " | ".join(cells + [md, wd] + tc) + " |")
    return "\n".join(out)


def add_deltas(rows: list[dict]) -> None:
    base = {r["name"].split("-")[0]: r for r in rows if r["name"].endswith("-v0")}
    for r in rows:
        b = base.get(r["name"].split("-")[0])
        if b is None:
            continue
        ds = [r["auroc"][c] - b["auroc"][c] for c in COLUMNS if c in r["auroc"] and c in b["auroc"]]
        if ds:
            r["mean_delta"] = float(np.mean(ds))
            r["worst_delta"] = float(np.min(ds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT_ROWS, help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--timing",
        default="padim-v0,padim,patchcore,padim-124s4-anomalib",
        help="rows to time with the real detector ('padim'/'patchcore': the class defaults)",
    )
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--time-images", type=int, default=320)
    ap.add_argument("--cache", default=None)
    ap.add_argument(
        "--elpv-test-limit",
        type=int,
        default=None,
        help="score a seeded subset of each ELPV test set (PatchCore sweeps on a busy CPU)",
    )
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="only print the table of rows saved by earlier --json runs",
    )
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())]
        add_deltas(rows)
        print(format_table(rows))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    cache = Path(
        args.cache
        or Path(os.environ.get("GAIKAN_CACHE") or Path.home() / ".cache" / "gaikan") / "basket"
    )
    if args.quick:
        cache = cache / "quick"
    names = [n for n in args.configs.split(",") if n]
    timed = set() if args.no_timing else set(args.timing.split(","))
    unknown = [n for n in names + sorted(timed) if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    sources = load_sources(args.quick, cache)
    if args.elpv_test_limit:
        for t in (t for src in sources for t in src.tasks if t.column.startswith("elpv")):
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(len(t.test), min(args.elpv_test_limit, len(t.test)), False))
            t.test, t.labels = t.test[keep], t.labels[keep]
    feats = {s.name: cached_features(s, cache, args.threads) for s in sources}
    print(f"  data + features: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rows = []
    for name in names + [n for n in CONFIGS if n in timed and n not in names]:
        t1 = time.perf_counter()
        row = {"name": name, "kind": CONFIGS[name][0], "params": CONFIGS[name][1]}
        row["auroc"] = evaluate(name, sources, feats, args.threads, cache)
        row["eval_s"] = time.perf_counter() - t1
        if name in timed:
            row["timing"] = time_config(name, args.threads, 64 if args.quick else args.time_images)
        rows.append(row)
        if args.json:  # after every row: a long run leaves its partial table
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1, default=str)
        print(
            f"  {name}: "
            + " ".join(f"{c}={v:.3f}" for c, v in row["auroc"].items())
            + f" ({row['eval_s']:.0f} s) {row.get('timing', '')}",
            file=sys.stderr,
            flush=True,
        )
    add_deltas(rows)
    load1 = os.getloadavg()
    print(
        f"size={SIZE} threads={args.threads} quick={args.quick} "
        f"elpv_test_limit={args.elpv_test_limit} "
        f"loadavg(1 min) start={load0[0]:.2f} end={load1[0]:.2f}"
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
