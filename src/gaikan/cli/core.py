"""Core commands: ``fit``, ``inspect``, ``demo``, ``bench``.

Exit codes (all commands): 0 success; 1 only for ``inspect
--fail-on-defect`` when a part is flagged; 2 usage errors, unreadable
model files, or nothing could be scored (also unreadable images with
``--strict``).
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import GaikanError

__all__ = ["COMMANDS", "bench", "demo", "fit", "inspect"]

#: Default image size when none is given: the spec's 100×100 for the
#: pixel detectors, 256×256 for deep ones.
DEFAULT_SIZE = {"pixel": 100, "deep": 256}


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, disable=None
    )


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", value)
    if not m:
        raise click.BadParameter(f"{value!r} is not a size: use 128 or 96x128 (HxW)")
    h = int(m.group(1))
    w = int(m.group(2) or h)
    if h < 1 or w < 1:
        raise click.BadParameter("size must be positive")
    return h, w


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="-p/--param")
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out[key.strip().replace("-", "_")] = val
    return out


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and braces: "a[x=[1,2]],b" → ["a[x=[1,2]]", "b"]."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def _fail(msg: str, code: int = 2) -> None:
    click.echo(f"error: {msg}", err=True)
    raise SystemExit(code)


def _collect(inputs: tuple[str, ...]) -> list[Path]:
    from ..io import find_images

    try:
        return find_images(inputs)
    except FileNotFoundError as exc:
        _fail(str(exc))
        raise  # unreachable


def _report_errors(errors, strict: bool) -> None:
    for _path, msg in errors:
        click.echo(f"skipped: {msg}", err=True)
    if errors and strict:
        _fail(f"{len(errors)} unreadable image(s) and --strict is set")


def build_detector(detector: str, kernel, stride, params: dict[str, Any]):
    """Instantiate a registry detector from CLI options (no maths)."""
    from ..detectors.registry import get_detector_class

    try:
        cls = get_detector_class(detector)
    except (ValueError, ImportError) as exc:
        _fail(str(exc))
    from ..detectors.base import BaseDetector

    if not issubclass(cls, BaseDetector):
        _fail(f"{detector!r} is a classifier: train it on labelled folders with `gaikan train`")
    names = set(cls._param_names())
    for key, val in (("kernel", kernel), ("stride", stride)):
        if val is None:
            continue
        if key in names:
            params.setdefault(key, val)
        elif "detector_params" in names:  # wrappers (variants) pass it on
            params.setdefault("detector_params", {}).setdefault(key, val)
        else:
            _fail(f"--{key} does not apply to detector {detector!r}")
    unknown = sorted(set(params) - names)
    if unknown:
        _fail(
            f"detector {detector!r} has no parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(names))}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        _fail(f"bad parameters for {detector!r}: {exc}")


def _default_size(detector: str) -> tuple[int, int]:
    from ..detectors.registry import DEEP_KINDS

    s = DEFAULT_SIZE["deep" if detector in DEEP_KINDS else "pixel"]
    return s, s


@click.command()
@click.argument("good", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Model file to write (e.g. model.gaikan).",
)
@click.option(
    "--detector",
    default="soartc",
    show_default=True,
    help="soartc | soart3map | rt | padim | patchcore | soart-deep",
)
@click.option("--kernel", type=int, default=None, help="Window size k (default 10).")
@click.option("--stride", type=int, default=None, help="Window stride s (default 5).")
@click.option(
    "--size",
    default=None,
    help="Resize images to this size, e.g. 100 or 96x128 (HxW). "
    "Default: 100 for pixel detectors, 256 for deep ones.",
)
@click.option("--backbone", default=None, help="Backbone of a deep detector.")
@click.option(
    "--threshold-quantile",
    type=float,
    default=None,
    help="Quantile of leave-one-out training scores used as threshold (0.99).",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other detector parameter (repeatable), value as JSON or text.",
)
@click.option("--strict", is_flag=True, help="Fail (exit 2) if any image is unreadable.")
def fit(good, output, detector, kernel, stride, size, backbone, threshold_quantile, params, strict):
    """Fit a detector on GOOD images (files, folders, or an MVTec AD folder)."""
    from ..io import is_mvtec, load_images

    extra = _parse_params(params)
    if backbone is not None:
        extra["backbone"] = backbone
    if threshold_quantile is not None:
        extra["threshold_quantile"] = threshold_quantile
    det = build_detector(detector, kernel, stride, extra)
    hw = _parse_size(size) or _default_size(detector)
    inputs = tuple(str(Path(g) / "train" / "good") if is_mvtec(g) else g for g in good)
    files = _collect(inputs)
    if not files:
        _fail("no images found in " + ", ".join(good))
    with _progress(len(files), "loading") as bar:
        batch = load_images(files, hw, progress=bar.update)
    _report_errors(batch.errors, strict)
    n = batch.images.shape[0]
    if n == 0:
        _fail("none of the images could be read")
    click.echo(f"fitting {detector} on {n} good images of {hw[0]}x{hw[1]} …", err=True)
    t0 = time.perf_counter()
    try:
        det.fit(batch.images)
    except (ValueError, GaikanError) as exc:
        _fail(str(exc))
    dt = time.perf_counter() - t0
    det.save(output)
    click.echo(
        f"saved {output}: {detector}, {n} images, threshold {det.threshold_:.4g} (fit {dt:.1f} s)"
    )


def _safe_name(i: int, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{path.parent.name}_{path.stem}")[:80]
    return f"{i:05d}_{stem}.png"


def _run_batches(
    files: list[Path],
    out: Path,
    size,
    judge,
    label_of,
    *,
    overlays: bool,
    batch_size: int,
    progress,
):
    """Load files batch by batch, let ``judge(images)`` give one
    ``(record, map, overlay options)`` per image, write overlays; bad files
    become records with an ``error``.  Memory stays bounded by the batch."""
    from ..io import load_images
    from ..report import InspectionRecord, save_overlay

    records: list[InspectionRecord] = []
    ov_dir = out / "overlays"
    if overlays:
        ov_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        batch = load_images(chunk, size)
        bad = dict(batch.errors)
        judged = judge(batch.images) if batch.images.shape[0] else []
        k = 0
        for j, p in enumerate(chunk):
            if p in bad:
                records.append(InspectionRecord(file=str(p), error=bad[p], label=label_of(p)))
                continue
            rec, amap, options = judged[k]
            rec.file, rec.label = str(p), label_of(p)
            if overlays:
                name = _safe_name(start + j, p)
                save_overlay(ov_dir / name, batch.images[k], amap, **options)
                rec.overlay = f"overlays/{name}"
            records.append(rec)
            k += 1
        if progress is not None:
            progress(len(chunk))
    return records


def run_inspection(
    det,
    files: list[Path],
    out: Path,
    *,
    overlays: bool = True,
    batch_size: int = 32,
    label_folders: bool = True,
    progress=None,
):
    """Score files with an anomaly detector; return InspectionRecords.

    Pure orchestration: loading (io), scoring (detector), pictures (report).
    """
    from ..io import GOOD_NAMES
    from ..report import InspectionRecord

    parents = {p.parent.name.lower() for p in files}
    labelled = label_folders and bool(parents & GOOD_NAMES) and len(parents) > 1

    def label_of(p: Path):
        if not labelled:
            return None
        return "good" if p.parent.name.lower() in GOOD_NAMES else p.parent.name

    def judge(images):
        res = det.detect(images)
        return [
            (
                InspectionRecord(
                    file="", score=float(s), verdict="defect" if s > res.threshold else "ok"
                ),
                amap,
                {"threshold": res.threshold},
            )
            for s, amap in zip(res.scores, res.maps)
        ]

    return _run_batches(
        files,
        out,
        det.image_shape_,
        judge,
        label_of,
        overlays=overlays,
        batch_size=batch_size,
        progress=progress,
    )


def run_classification(
    clf, files: list[Path], out: Path, *, overlays: bool = True, batch_size: int = 32, progress=None
):
    """Classify files; the verdict is the class, the score its probability,
    overlays show where the network looked (``explain``)."""
    from ..io import classifier_image_shape
    from ..report import InspectionRecord

    def judge(images):
        proba = clf.predict_proba(images)
        best = proba.argmax(axis=1)
        # the predicted class, given: an ensemble would otherwise predict again
        maps = clf.explain(images, target=clf.classes_[best]) if overlays else [None] * len(images)
        return [
            (
                InspectionRecord(file="", score=float(pr[c]), verdict=str(clf.classes_[c])),
                amap,
                {"vmin": 0.0, "vmax": 1.0},
            )
            for pr, c, amap in zip(proba, best, maps)
        ]

    return _run_batches(
        files,
        out,
        classifier_image_shape(clf),
        judge,
        lambda p: p.parent.name,
        overlays=overlays,
        batch_size=batch_size,
        progress=progress,
    )


def write_results_csv(path: Path, records) -> None:
    """results.csv: file, score, verdict, error (+ folder label when known)."""
    labelled = any(r.label is not None for r in records)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "score", "verdict", "error"] + (["folder_label"] if labelled else []))
        for r in records:
            row = [
                r.file,
                "" if r.score is None else f"{r.score:.6g}",
                r.verdict or "",
                r.error or "",
            ]
            w.writerow(row + ([r.label or ""] if labelled else []))


def write_classes_csv(path: Path, records) -> None:
    """results.csv of a classifier: file, class, confidence, error."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "class", "confidence", "error"])
        for r in records:
            w.writerow(
                [
                    r.file,
                    r.verdict or "",
                    "" if r.score is None else f"{r.score:.6g}",
                    r.error or "",
                ]
            )


def _load_model(path: str):
    from ..detectors.registry import load

    try:
        return load(path)
    except (GaikanError, ImportError) as exc:
        _fail(str(exc))


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--output",
    "output",
    default="gaikan-out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for results.csv, overlays, report.",
)
@click.option("--threshold", type=float, default=None, help="Override the model's threshold.")
@click.option("--no-overlays", is_flag=True, help="Do not write heatmap overlay PNGs.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--strict", is_flag=True, help="Exit 2 if any image is unreadable.")
@click.option("--fail-on-defect", is_flag=True, help="Exit 1 if any part is flagged.")
def inspect(model, images, output, threshold, no_overlays, batch_size, strict, fail_on_defect):
    """Inspect IMAGES (files or folders, recursively) with a saved MODEL.

    Writes OUTPUT/results.csv, OUTPUT/overlays/*.png and OUTPUT/report.html.
    An MVTec AD folder is inspected through its test/ folder.
    """
    from ..io import is_mvtec
    from ..report import write_report

    det = _load_model(model)
    is_classifier = hasattr(det, "predict_proba") and not hasattr(det, "set_threshold")
    if threshold is not None:
        if is_classifier:
            _fail("--threshold applies to anomaly detectors, not to classifiers")
        det.set_threshold(threshold)
    inputs = tuple(str(Path(i) / "test") if is_mvtec(i) else i for i in images)
    files = _collect(inputs)
    if not files:
        _fail("no images found in " + ", ".join(images))
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with _progress(len(files), "inspecting") as bar:
        run = run_classification if is_classifier else run_inspection
        records = run(
            det,
            files,
            out,
            overlays=not no_overlays,
            batch_size=max(1, batch_size),
            progress=bar.update,
        )
    errors = [r for r in records if r.error]
    n_ok = len(records) - len(errors)
    flagged = [r for r in records if r.verdict == "defect"] if not is_classifier else []
    if is_classifier:
        write_classes_csv(out / "results.csv", records)
        report = write_report(
            out,
            records,
            threshold=None,
            model=f"{model} ({det!r})",
            classes=[str(c) for c in det.classes_],
        )
        for r in records:
            if r.score is not None:
                click.echo(f"{r.file}\t{r.verdict}\t{r.score:.3f}")
        summary = f"{n_ok} classified"
    else:
        write_results_csv(out / "results.csv", records)
        report = write_report(out, records, threshold=det.threshold_, model=f"{model} ({det!r})")
        summary = f"{n_ok} inspected, {len(flagged)} flagged"
    click.echo(f"{summary}, {len(errors)} unreadable → {out / 'results.csv'}, {report}")
    _report_errors([(r.file, r.error) for r in errors], strict)
    if n_ok == 0:
        _fail("none of the images could be scored")
    if flagged and fail_on_defect:
        raise SystemExit(1)


@click.command()
@click.option(
    "-o",
    "--output",
    "output",
    default="gaikan-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's data and report.",
)
@click.option(
    "--dataset",
    type=click.Choice(["connectors", "elpv"]),
    default="connectors",
    show_default=True,
    help="Built-in example data.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(output, dataset, seed):
    """Run the whole job on built-in example data, offline.

    connectors: synthesise a small connector set (good parts and pins that
    are missing, pushed in, shifted or tilted), fit SOARTC on the good
    images and inspect the test set.  elpv: the same on real solar cells
    shipped by the elpv-dataset package.  Writes OUTPUT/report.html.
    """
    from ..detectors import SOARTC
    from ..io import find_images, load_images
    from ..report import write_report

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if dataset == "elpv":
        data_dir, det = _demo_elpv(out, seed), SOARTC(kernel=10, stride=5)
    else:
        data_dir, det = (
            _demo_connectors(out, seed),
            SOARTC(kernel=8, stride=4, map_baseline="median"),
        )
    train_dir, test_dir = data_dir / "train" / "good", data_dir / "test"
    files = find_images([train_dir])
    with _progress(len(files), "loading good images") as bar:
        batch = load_images(files, progress=bar.update)
    click.echo(f"fitting SOARTC on {len(batch.paths)} good images …", err=True)
    det.fit(batch.images)
    det.save(out / "model.gaikan")
    test_files = find_images([test_dir])
    with _progress(len(test_files), "inspecting") as bar:
        records = run_inspection(det, test_files, out, progress=bar.update)
    write_results_csv(out / "results.csv", records)
    report = write_report(
        out,
        records,
        threshold=det.threshold_,
        model=f"demo: {det!r}",
        title=f"gaikan demo ({dataset})",
    )
    flagged = sum(r.verdict == "defect" for r in records)
    defect_files = sum(r.label not in (None, "good") for r in records)
    caught = sum(r.verdict == "defect" and r.label not in (None, "good") for r in records)
    false = sum(r.verdict == "defect" and r.label == "good" for r in records)
    click.echo(
        f"demo ({dataset}): {len(records)} test images, {flagged} flagged; "
        f"{caught}/{defect_files} defective parts caught, {false} good parts flagged "
        f"({time.perf_counter() - t0:.0f} s)\nreport: {report.resolve()}"
    )


def _demo_elpv(out: Path, seed: int) -> Path:
    """Write a small ELPV split as PNG folders (train/good, test/good, test/defect)."""
    import numpy as np
    from PIL import Image

    from ..datasets import elpv_split, load_elpv

    root = out / "data"
    d = load_elpv(size=100)
    tr, te = elpv_split(d.probs, seed=seed)
    rng = np.random.default_rng(seed)
    train = rng.choice(tr, 150, replace=False)
    te_good = rng.choice(te[d.probs[te] == 0], 40, replace=False)
    te_bad = rng.choice(te[d.probs[te] == 1], 40, replace=False)
    for folder, idx in (("train/good", train), ("test/good", te_good), ("test/defect", te_bad)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(d.images[i]).save(root / folder / f"cell{i:04d}.png")
    return root


def _demo_connectors(out: Path, seed: int) -> Path:
    """Render a small synthetic connector set (oblique view) in MVTec layout."""
    from ..synth import make_dataset

    root = out / "data"
    make_dataset(
        root,
        layout="mixed",
        n_good=100,
        n_test_good=15,
        n_defect=6,
        views=("oblique",),
        size=128,
        seed=seed,
    )
    return root / "oblique"


@click.command()
@click.argument("dataset")
@click.option(
    "--detectors",
    default="soartc,soart3map,rt",
    show_default=True,
    help="Comma-separated registry names; parameters inline as "
    "soartc[map_baseline=median;kernel=8].",
)
@click.option(
    "--size", default=None, help="Image size (default 100 pixel / 256 deep; connectors: 128)."
)
@click.option("--kernel", type=int, default=None)
@click.option("--stride", type=int, default=None)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="DETECTOR.KEY=VALUE",
    help="Detector parameter, e.g. -p padim.n_features=200 (repeatable).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the rows as JSON.",
)
def bench(dataset, detectors, size, kernel, stride, params, seed, batch_size, json_out):
    """Benchmark detectors on DATASET: elpv | elpv-mono | elpv-poly | connectors[:VIEW] |
    an MVTec AD folder.  Prints image AUROC, pixel AUROC (with masks), fit
    time, ms per image, peak RSS, and per-defect-type AUROC.
    """
    from ..benchmark import format_table, run_bench, threads_note
    from ..detectors.registry import DEEP_KINDS, get_detector_class

    per_det: dict[str, dict[str, Any]] = {}
    for key, val in _parse_params(params).items():
        det, dot, name = key.partition(".")
        if not dot:
            _fail(f"-p {key}: use DETECTOR.KEY=VALUE")
        per_det.setdefault(det, {})[name] = val
    plan = []
    for entry in _split_top(detectors, ","):
        m = re.fullmatch(r"\s*([\w-]+)\s*(?:\[(.*)\])?\s*", entry)
        if not m:
            _fail(f"--detectors: cannot parse {entry!r}")
        kind, inline = m.group(1), m.group(2)
        try:
            names = set(get_detector_class(kind)._param_names())
        except (ValueError, ImportError) as exc:
            _fail(str(exc))
        p = dict(per_det.get(kind, {}))
        if inline:
            p.update(_parse_params(tuple(x.strip() for x in _split_top(inline, ";") if x.strip())))
        for k, v in (("kernel", kernel), ("stride", stride)):
            if v is not None and k in names:
                p.setdefault(k, v)
        plan.append((kind, p))
    hw = _parse_size(size)
    if hw is None:
        deep = any(k in DEEP_KINDS for k, _ in plan)
        hw = (
            (128, 128)
            if dataset.startswith("connectors")
            else _default_size("padim" if deep else "soartc")
        )
    if not (dataset.startswith(("elpv", "connectors")) or Path(dataset).is_dir()):
        _fail(f"{dataset}: not a folder, and not one of elpv, elpv-mono, elpv-poly, connectors")
    click.echo(f"# gaikan bench {dataset} at {hw[0]}x{hw[1]}, seed {seed}, {threads_note()}")
    rows = run_bench(dataset, plan, hw, seed=seed, batch_size=batch_size)
    click.echo(format_table(rows))
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=1, default=str))
    if all("error" in r for r in rows):
        raise SystemExit(2)


COMMANDS = [fit, inspect, demo, bench]
