"""Seeded synthetic datasets: in-memory samples and MVTec AD / ImageFolder folders.

Every image is a pure function of ``(seed, split, defect, index)``: its part
(nominal jitter), its defect (pin, severity), its cameras and its sensor
noise are drawn from generators keyed by those values
(:func:`~gaikan.synth.scene.sample_rng`), so results do not depend on the
number of workers or the order of rendering, and the same seed gives
byte-identical files.  ``render_sample(defect, split=..., index=i, ...)``
returns exactly the pixels of file ``i`` of that split in
:func:`make_dataset`'s output.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ParameterError
from . import blender as blender_renderer
from . import raycast
from .blender import Backend, Look
from .scene import (
    DEFAULT_SEVERITY,
    LAYOUTS,
    VIEWS,
    Jitter,
    Scene,
    build_scene,
    make_camera,
    parse_defect,
    sample_defect,
    sample_rng,
)

__all__ = [
    "DEFAULT_DEFECTS",
    "build_sample_scenes",
    "count_images",
    "defect_mask",
    "iter_labels",
    "make_dataset",
    "render_sample",
    "render_views",
    "render_views_blender",
]

DEFAULT_DEFECTS = ("missing", "pushed", "tilt_x", "tilt_y", "shifted")
FORMATS = ("mvtec", "classes")


def build_sample_scenes(
    defect: str = "good",
    *,
    layout: str = "mixed",
    views: Sequence[str] = VIEWS,
    seed: int = 0,
    split: str = "test",
    index: int = 0,
    severity: Mapping[str, Any] | None = None,
    pin: tuple[int, int] | None = None,
    jitter: Jitter | None = None,
    pattern: str | None = None,
) -> tuple[Scene, Scene | None]:
    """The scene of one sample and, for a defect, its nominal twin (same part, no defect).

    Returns
    -------
    scene : Scene
    nominal : Scene or None
        None for ``defect="good"``.
    """
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    part_state = sample_rng(seed, split, defect, index, "part").bit_generator.state
    d = None
    if defect != "good":
        modes = parse_defect(defect)
        d = sample_defect(modes, sample_rng(seed, split, defect, index, "defect"), severity, pin)

    def build(dd):
        rng = np.random.default_rng()
        rng.bit_generator.state = part_state
        return build_scene(layout, dd, views=views, rng=rng, jitter=jitter, pattern=pattern)

    scene = build(d)
    scene.meta.update(
        {"seed": int(seed), "split": split, "index": int(index), "defect_name": defect}
    )
    return scene, (build(None) if d is not None else None)


def defect_mask(
    scene: Scene, ids: np.ndarray, nominal: Scene | None, nominal_ids: np.ndarray | None
) -> np.ndarray:
    """Union of the defective pin's visible pixels in the defect and nominal scenes.

    Parameters
    ----------
    scene, nominal : Scene
    ids, nominal_ids : ndarray (H, W) int
        Object-id buffers of the two scenes from the same camera.

    Returns
    -------
    ndarray (H, W) bool (all False for a good part)
    """
    mask = np.zeros(ids.shape, dtype=bool)
    info = scene.meta.get("defect")
    if not info or nominal is None or nominal_ids is None:
        return mask
    k = scene.index(info["pin"])
    if k is not None:
        mask |= ids == k
    k0 = nominal.index(info["pin"])
    if k0 is not None:
        mask |= nominal_ids == k0
    return mask


def _noise_rng(scene: Scene, view: str) -> np.random.Generator:
    m = scene.meta
    return sample_rng(m["seed"], m["split"], m["defect_name"], m["index"], "noise", view)


def render_views(
    scene: Scene,
    nominal: Scene | None,
    views: Sequence[str],
    size: int,
    supersample: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Render ``views`` of a sample with the numpy ray caster: [(image uint8, mask bool)]."""
    out = []
    for v in views:
        img, ids = raycast.render(scene, v, size, supersample=supersample, rng=_noise_rng(scene, v))
        nids = raycast.render_ids(nominal, v, size) if nominal is not None else None
        out.append((img, defect_mask(scene, ids, nominal, nids)))
    return out


def render_views_blender(
    samples: Sequence[tuple[Scene, Scene | None]],
    views: Sequence[str],
    size: int,
    *,
    blender: str | os.PathLike | Backend | None = None,
    look: Look | None = None,
    cycles_samples: int | None = None,
    threads: int = 1,
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Render samples with Blender (Cycles) in one Blender process: per sample [(image, mask)].

    The twin of :func:`render_views` for the Blender renderer
    (:mod:`gaikan.synth.blender`): the same scenes, cameras, masks (object
    ids of the defect and nominal scenes, pixel-centre rule) and sensor
    noise stream; on top, the Blender look (:class:`~gaikan.synth.blender.Look`)
    varies lights and Cycles seed per image and roughness per part, from
    streams keyed like every other draw (seed, split, defect, index).

    Parameters
    ----------
    samples : sequence of (Scene, Scene or None)
        :func:`build_sample_scenes` results (their ``meta`` keys the streams).
    views : sequence of str
    size : int
    blender : path or Backend, optional
        See :func:`gaikan.synth.blender.find_blender`.
    look : Look, optional
    cycles_samples : int, optional
        Paths per pixel (default ``look.samples``).
    threads : int, default 1
        Cycles threads.

    Returns
    -------
    list (per sample) of list (per view) of (image uint8 (size, size), mask bool (size, size))
    """
    bl = blender_renderer
    look = look if look is not None else Look()
    jobs: list[dict[str, Any]] = []
    for scene, nominal in samples:
        m = scene.meta
        key = (m["seed"], m["split"], m["defect_name"], m["index"], "blender")
        part_state = sample_rng(*key, "part").bit_generator.state
        for v in views:
            part_rng = np.random.default_rng()
            part_rng.bit_generator.state = part_state  # same part in every view
            lk = bl.draw_look(look, scene, part_rng, sample_rng(*key, v))
            jobs.append({"scene": scene, "view": v, "size": size, "look": lk})
            if nominal is not None:
                jobs.append({"scene": nominal, "view": v, "size": size, "ids_only": True})
    results = iter(
        bl.render_scenes(jobs, blender, samples=cycles_samples, threads=threads, look=look)
    )
    out = []
    for scene, nominal in samples:
        rendered = []
        for v in views:
            lin, ids = next(results)
            nids = next(results)[1] if nominal is not None else None
            assert lin is not None
            img = bl.to_uint8(lin, look.exposure, scene.noise_sigma, _noise_rng(scene, v))
            rendered.append((img, defect_mask(scene, ids, nominal, nids)))
        out.append(rendered)
    return out


def _label(scene: Scene, view: str, size: int) -> dict[str, Any]:
    m = scene.meta
    d = m.get("defect")
    cam = scene.cameras[view]
    rec: dict[str, Any] = {
        "view": view,
        "split": m["split"],
        "defect": m["defect_name"],
        "index": m["index"],
        "layout": m["layout"],
        "seed": m["seed"],
        "size": int(size),
        "pin": None,
        "severity": {},
        "camera": {
            "position": list(cam.position),
            "rotation": list(cam.rotation),
            "fov_y": cam.fov_y,
        },
    }
    if d:
        rec["pin"] = {"row": d["row"], "col": d["col"], "name": d["pin"]}
        rec["severity"] = dict(d["severity"])
        if "shifted" in d["severity"]:
            rec["direction"] = d["direction"]
    return rec


def render_sample(
    defect: str = "good",
    *,
    layout: str = "mixed",
    view: str = "oblique",
    size: int = 128,
    seed: int = 0,
    split: str = "test",
    index: int = 0,
    severity: Mapping[str, Any] | None = None,
    pin: tuple[int, int] | None = None,
    supersample: int = 1,
    jitter: Jitter | None = None,
    pattern: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one synthetic image in memory.

    Parameters
    ----------
    defect : str, default "good"
        ``"good"``, a mode of :data:`~gaikan.synth.scene.DEFECT_MODES` or a
        ``+``-joined combination such as ``"pushed+tilt_x"``.
    layout : {"square", "cylinder", "mixed"}
    view : str, default "oblique"
        ``"top"``, ``"oblique"`` or ``"oblique_y"``.
    size : int
        Square image side in pixels.
    seed, split, index :
        Identify the sample; ``split="train"`` goods are the unit space,
        ``"test"`` the test set, exactly as in :func:`make_dataset`.
    severity : mapping, optional
        Per mode a ``(low, high)`` range or a fixed signed value
        (default :data:`~gaikan.synth.scene.DEFAULT_SEVERITY`).
    pin : (row, col), optional
        Fix the defective pin (default: drawn uniformly).
    supersample : int, default 1
    jitter : Jitter, optional
        Nominal variation (default :class:`~gaikan.synth.scene.Jitter`).
    pattern : str, optional
        Mixed-layout pattern (see :func:`~gaikan.synth.scene.pin_pattern`).

    Returns
    -------
    image : ndarray (size, size) uint8
    mask : ndarray (size, size) bool
        Defective pin's silhouette in the defect ∪ nominal scene.
    label : dict
        The ``labels.jsonl`` record (without file names).
    """
    scene, nominal = build_sample_scenes(
        defect, layout=layout, views=(view,), seed=seed, split=split, index=index,
        severity=severity, pin=pin, jitter=jitter, pattern=pattern,
    )  # fmt: skip
    ((img, mask),) = render_views(scene, nominal, (view,), size, supersample)
    return img, mask, _label(scene, view, size)


# --------------------------------------------------------------------------- files


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def count_images(
    n_good: int, n_test_good: int, n_defect: int, defects: Sequence[str], views: Sequence[str]
) -> int:
    """Number of images (not counting masks) :func:`make_dataset` writes."""
    return (n_good + n_test_good + n_defect * len(defects)) * len(views)


def _tasks(n_good, n_test_good, n_defect, defects) -> list[tuple[str, str, int]]:
    t = [("train", "good", i) for i in range(n_good)]
    t += [("test", "good", i) for i in range(n_test_good)]
    for d in defects:
        t += [("test", d, i) for i in range(n_defect)]
    return t


def _relpaths(
    fmt: str, view: str, split: str, defect: str, index: int, width: int
) -> tuple[str, str | None]:
    name = f"{index:0{width}d}"
    if fmt == "classes":
        return f"{view}/{defect}/{split}_{name}.png", None
    if defect == "good":
        return f"{view}/{split}/good/{name}.png", None
    return f"{view}/test/{defect}/{name}.png", f"{view}/ground_truth/{defect}/{name}_mask.png"


def _job(args: tuple) -> list[dict[str, Any]]:
    """Render and write one sample in all views; returns its label records."""
    (out, split, defect, index, cfg) = args
    scene, nominal = build_sample_scenes(
        defect, layout=cfg["layout"], views=cfg["views"], seed=cfg["seed"], split=split, index=index,
        severity=cfg["severity"], jitter=cfg["jitter"], pattern=cfg["pattern"],
    )  # fmt: skip
    rendered = render_views(scene, nominal, cfg["views"], cfg["size"], cfg["supersample"])
    return _write_sample(Path(out), scene, cfg, rendered)


def _blender_job(args: tuple) -> list[list[dict[str, Any]]]:
    """Render and write a chunk of samples in one Blender process; their label records."""
    (out, chunk, cfg) = args
    kw = {k: cfg[k] for k in ("layout", "views", "seed", "severity", "jitter", "pattern")}
    built = [
        build_sample_scenes(defect, split=split, index=index, **kw)
        for split, defect, index in chunk
    ]
    b = cfg["blender"]
    rendered = render_views_blender(
        built, cfg["views"], cfg["size"], blender=b["backend"], look=b["look"],
        cycles_samples=b["samples"], threads=b["threads"],
    )  # fmt: skip
    return [
        _write_sample(Path(out), scene, cfg, r)
        for (scene, _), r in zip(built, rendered, strict=True)
    ]


def _write_sample(
    out: Path, scene: Scene, cfg: Mapping[str, Any], rendered
) -> list[dict[str, Any]]:
    m = scene.meta
    recs = []
    for view, (img, mask) in zip(cfg["views"], rendered, strict=True):
        rel, rel_mask = _relpaths(
            cfg["format"], view, m["split"], m["defect_name"], m["index"], cfg["width"]
        )
        _write(out / rel, _png_bytes(img))
        if rel_mask is not None:
            _write(out / rel_mask, _png_bytes(mask.astype(np.uint8) * 255))
        rec: dict[str, Any] = {"file": rel, "mask": rel_mask}
        rec.update(_label(scene, view, cfg["size"]))
        rec["mask_pixels"] = int(mask.sum())
        recs.append(rec)
    return recs


def make_dataset(
    out_dir: str | os.PathLike,
    *,
    layout: str = "mixed",
    n_good: int = 200,
    n_test_good: int = 50,
    n_defect: int = 30,
    defects: Sequence[str] = DEFAULT_DEFECTS,
    views: Sequence[str] = VIEWS,
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    format: str = "mvtec",
    progress: Callable[[int], None] | None = None,
    severity: Mapping[str, Any] | None = None,
    supersample: int = 1,
    jitter: Jitter | None = None,
    pattern: str | None = None,
    renderer: str = "numpy",
    blender: str | os.PathLike | None = None,
    look: Look | None = None,
    samples: int | None = None,
    threads: int = 1,
    blender_python: str | os.PathLike | None = None,
) -> Path:
    """Render a synthetic connector dataset to ``out_dir``.

    Layout for ``format="mvtec"`` (one MVTec AD category per view)::

        <view>/train/good/000.png …            n_good unit-space images
        <view>/test/good/000.png …             n_test_good
        <view>/test/<defect>/000.png …         n_defect per defect spec
        <view>/ground_truth/<defect>/000_mask.png   0/255 masks
        labels.jsonl                            one JSON record per image

    ``format="classes"`` writes ImageFolder classes
    ``<view>/<good|defect>/<split>_<index>.png`` (train and test goods both
    in ``good/``) plus ``labels.jsonl``.

    Parameters
    ----------
    out_dir : path
    layout : {"square", "cylinder", "mixed"}
    n_good, n_test_good, n_defect : int
        Train goods, test goods, and test images *per* defect spec.
    defects : sequence of str
        Modes or ``+``-joined combinations (``"pushed+tilt_x"``).
    views : sequence of str
    size : int
        Square image side in pixels.
    seed : int
    workers : int, default 1
        Processes (numpy) or Blender processes run side by side (blender);
        the files do not depend on it.
    format : {"mvtec", "classes"}
    progress : callable, optional
        Called with the number of images *just finished* (an increment, so
        ``tqdm.update`` fits) after every sample; total =
        :func:`count_images`.
    severity, supersample, jitter, pattern :
        See :func:`render_sample`.
    renderer : {"numpy", "blender"}
        ``"blender"``: Cycles via :mod:`gaikan.synth.blender` (needs
        ``gaikan[blender]`` or a Blender application), same files and
        masks, photoreal look.
    blender : path, optional
        The Blender application or a Python with ``bpy`` (default: found by
        :func:`gaikan.synth.blender.find_blender`).  ``blender_python`` is
        the older name of this parameter.
    look : Look, optional
        Blender materials, lights and their variation.
    samples : int, optional
        Cycles paths per pixel (default ``look.samples``).
    threads : int, default 1
        Cycles threads per Blender process (the files do not depend on it).

    Returns
    -------
    Path
        ``out_dir``.
    """
    if format not in FORMATS:
        raise ParameterError(f"format must be one of {FORMATS}, got {format!r}")
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    defects = tuple(defects)
    for d in defects:
        parse_defect(d)
    views = tuple(views)
    if not views:
        raise ParameterError("no views given")
    for v in views:
        make_camera(v)  # validates the name
    for name, n in (("n_good", n_good), ("n_test_good", n_test_good), ("n_defect", n_defect)):
        if int(n) < 0:
            raise ParameterError(f"{name} must be ≥ 0, got {n}")
    if severity:
        bad = set(severity) - set(DEFAULT_SEVERITY)
        if bad:
            raise ParameterError(f"severity given for unknown mode(s) {sorted(bad)}")
    backend = None
    if renderer == "blender":
        if int(supersample) != 1:
            raise ParameterError(
                "supersample is the numpy renderer's anti-aliasing; the Blender renderer "
                "anti-aliases with its paths per pixel (samples=...)"
            )
        if samples is not None and int(samples) < 1:
            raise ParameterError(f"samples must be ≥ 1, got {samples}")
        if int(threads) < 1:
            raise ParameterError(f"threads must be ≥ 1, got {threads}")
        backend = blender_renderer.find_blender(blender or blender_python)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(max(n_good, n_test_good, n_defect, 1) - 1)))
    cfg = {
        "layout": layout, "views": views, "size": int(size), "seed": int(seed), "format": format,
        "severity": dict(severity) if severity else None, "supersample": int(supersample),
        "jitter": jitter, "pattern": pattern, "width": width,
        "blender": {"backend": backend, "look": look or Look(), "samples": samples,
                    "threads": int(threads)},
    }  # fmt: skip
    tasks = _tasks(int(n_good), int(n_test_good), int(n_defect), defects)
    per = len(views)

    def tick():
        if progress is not None:
            progress(per)

    records: list[dict[str, Any]] = []
    if renderer == "blender":
        # in Blender chunks (one process each, ~1 s to start); threads run
        # the processes side by side, each render is independent of the others
        from concurrent.futures import ThreadPoolExecutor

        chunk = 8
        chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
        with ThreadPoolExecutor(max(1, min(int(workers), len(chunks) or 1))) as threads_pool:
            for recs_list in threads_pool.map(_blender_job, [(str(out), c, cfg) for c in chunks]):
                for recs in recs_list:
                    records.extend(recs)
                    tick()
    elif renderer != "numpy":
        raise ParameterError(f"renderer must be 'numpy' or 'blender', got {renderer!r}")
    else:
        jobs = [(str(out), split, defect, index, cfg) for split, defect, index in tasks]
        if workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                records.extend(_job(j))
                tick()
        else:
            # never plain fork: a process that already runs threads (a station, numba,
            # a test suite's servers) can fork a child that deadlocks on a held lock
            method = (
                "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            )
            ctx = multiprocessing.get_context(method)
            with ctx.Pool(min(int(workers), len(jobs))) as pool:
                for recs in pool.imap(_job, jobs, chunksize=4):
                    records.extend(recs)
                    tick()
    # group by view so the file reads like the folders (stable order)
    order = {v: i for i, v in enumerate(views)}
    records.sort(key=lambda r: order[r["view"]])
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    _write(out / "labels.jsonl", lines.encode())
    meta = {
        "generator": "gaikan.synth",
        "layout": layout, "views": list(views), "defects": list(defects), "size": int(size), "seed": int(seed),
        "n_good": int(n_good), "n_test_good": int(n_test_good), "n_defect": int(n_defect), "format": format,
        "renderer": renderer, "supersample": int(supersample),
        "severity": {k: list(v) if np.ndim(v) else v for k, v in {**DEFAULT_SEVERITY, **(severity or {})}.items()},
        "jitter": asdict(jitter or Jitter()),
    }  # fmt: skip
    if renderer == "blender":
        lk = look or Look()
        meta["blender"] = {
            "look": asdict(lk), "samples": int(samples if samples is not None else lk.samples),
            "backend": backend.kind if backend is not None else None,
        }  # fmt: skip
    _write(out / "synth.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return out


def iter_labels(root: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """Records of ``labels.jsonl`` under ``root``."""
    with open(Path(root) / "labels.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
