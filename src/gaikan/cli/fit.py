"""``gaikan fit``: a detector's unit space from good images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..i18n import t
from ._common import (
    EXIT_CODES_HELP,
    Exit,
    collect,
    fail,
    max_pixels_option,
    parse_params,
    parse_size,
    progress,
)

__all__ = ["build_detector", "default_size", "fit"]


def default_size(kind: str) -> tuple[int, int]:
    """(H, W) images are loaded at for ``kind`` when ``--size`` is not given (registry)."""
    from ..detectors.registry import default_size as registry_default

    return registry_default(kind)


def build_detector(
    kind: str, kernel: int | None, stride: int | None, params: dict[str, Any]
) -> Any:
    """Instantiate a registry detector from CLI options (exit 2 on a bad choice)."""
    from ..detectors.registry import get_detector_class, model_family

    try:
        if model_family(kind) == "classifier":
            fail(f"{kind!r} is a classifier: train it on labelled folders with `gaikan train`")
        cls: Any = get_detector_class(kind)
    except (ValueError, ImportError) as exc:
        fail(str(exc))
    names = set(cls._param_names())
    for key, val in (("kernel", kernel), ("stride", stride)):
        if val is None:
            continue
        if key in names:
            params.setdefault(key, val)
        elif "detector_params" in names:  # wrappers (variants) pass it on
            params.setdefault("detector_params", {}).setdefault(key, val)
        else:
            fail(f"--{key} does not apply to detector {kind!r}")
    unknown = sorted(set(params) - names)
    if unknown:
        fail(
            f"detector {kind!r} has no parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(names))}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        fail(f"bad parameters for {kind!r}: {exc}")


def _fit_or_exit(det: Any, images: Any) -> None:
    from ..detectors.base import MIN_UNIT_SPACE
    from ..errors import GaikanError, ParameterError

    if len(images) < MIN_UNIT_SPACE:
        fail(
            f"a unit space needs at least {MIN_UNIT_SPACE} good images, got {len(images)}",
            Exit.INPUT,
        )
    try:
        det.fit(images)
    except ParameterError as exc:  # a parameter value (names it)
        fail(str(exc), Exit.USAGE)
    except (ValueError, GaikanError) as exc:  # the images themselves
        fail(str(exc), Exit.INPUT)


def _outliers(det: Any, paths: list[Path]) -> list[int]:
    """Indices of unit-space images whose leave-one-out score stands far above the rest."""
    from ..metrics import robust_outliers

    scores = getattr(det, "train_scores_", None)
    if scores is None or len(scores) != len(paths):
        return []  # e.g. PatchCore scores a subset only
    return [int(i) for i in robust_outliers(scores)]


TILE_SPACES = click.Choice(["position", "shared"])
TILE_SPACE_HELP = (
    "With --tile: a unit space per tile position (aligned parts; the default) or one "
    "shared by every tile (textures, unaligned parts; far smaller deep models)."
)


@click.command(epilog=EXIT_CODES_HELP)
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
    help="soartc | soart3map | rt | variants | padim | patchcore | soart-deep | auto",
)
@click.option("--kernel", type=int, default=None, help="Window size k (default 10).")
@click.option("--stride", type=int, default=None, help="Window stride s (default 5).")
@click.option(
    "--size",
    default=None,
    help="Resize images to this size, e.g. 100 or 96x128 (HxW). "
    "Default: 100 for pixel detectors, 256 for deep ones.",
)
@click.option(
    "--resize",
    type=click.Choice(["stretch", "pad"]),
    default="stretch",
    show_default=True,
    help="How images are brought to --size: stretch (aspect not kept), or pad (aspect kept, "
    "the rest filled by reflecting the image). Stored in the model file; inspect, serve "
    "and watch do the same, and hottest points are given in the original image's pixels.",
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
@max_pixels_option()
@click.option(
    "--drop-outliers",
    is_flag=True,
    help="Refit without good images whose leave-one-out score stands far above the rest.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=8),
    default=None,
    help="Inspect large frames tile by tile: tile side in pixels (frames kept at full size).",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=32,
    show_default=True,
    help="With --tile: pixels shared by neighbouring tiles.",
)
@click.option("--tile-space", type=TILE_SPACES, default="position", help=TILE_SPACE_HELP)
@click.option(
    "--budget",
    default="120s",
    show_default=True,
    help="With --detector auto: time for trying configurations (e.g. 90s, 5m).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --detector auto.")
@click.option("--strict", is_flag=True, help="Fail (exit 3) if any image is unreadable.")
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS|local:N",
    help="Compute the fit's statistics on a dask.distributed cluster: a scheduler address "
    "(tcp://host:8786) or local:N worker processes (pip install 'gaikan[distributed]'). "
    "Workers must read the image files under the same paths. "
    "Kinds: soartc, soart3map, rt, padim (same model as without --dask) and patchcore "
    "(approximate coreset).",
)
def fit(
    good,
    output,
    detector,
    kernel,
    stride,
    size,
    resize,
    backbone,
    threshold_quantile,
    params,
    max_pixels,
    drop_outliers,
    tile,
    overlap,
    tile_space,
    budget,
    seed,
    strict,
    dask_address,
):
    """Fit a detector on GOOD images (files, folders, or an MVTec AD folder).

    --detector auto tries configurations (detector × size × kernel), cheapest
    first within --budget, on planted anomalies in held-out good images, and
    keeps the best (see OUTPUT.auto.csv).
    """
    if dask_address and (detector == "auto" or tile is not None or resize == "pad"):
        fail(
            "--dask does not apply to --detector auto, --tile or --resize pad; "
            "fit those without --dask"
        )
    if detector == "auto":
        _fit_auto(
            good, output, parse_size(size), _parse_budget(budget), seed, max_pixels, strict, resize
        )
        return

    extra = parse_params(params)
    if backbone is not None:
        extra["backbone"] = backbone
    if threshold_quantile is not None:
        extra["threshold_quantile"] = threshold_quantile
    det = build_detector(detector, kernel, stride, extra)
    hw = parse_size(size) or default_size(detector)
    if tile is not None:  # frames at full size (or --size), the detector on tiles
        from ..detectors.tiled import TiledDetector

        if resize == "pad":
            fail("--resize pad does not apply with --tile: tiles keep frames at full size")
        det = TiledDetector(
            detector,
            det.get_params(),
            tile=tile,
            overlap=overlap,
            per_position=tile_space == "position",
        )
        hw = parse_size(size)
    if dask_address:
        _fit_dask(det, detector, good, hw, max_pixels, strict, drop_outliers, output, dask_address)
        return
    batch = _load_good(collect(_good_inputs(good)), hw, max_pixels, strict, resize)
    n = batch.images.shape[0]
    h, w = batch.images.shape[1:]
    click.echo(t("fit.fitting", detector=det.kind or detector, n=n, h=h, w=w), err=True)
    if tile is None:
        _hint_tiles(batch.shapes, (h, w))
    t0 = time.perf_counter()
    _fit_or_exit(det, batch.images)
    paths = list(batch.paths)
    out = _outliers(det, paths)
    if out:
        names = ", ".join(str(paths[i]) for i in out)
        if drop_outliers:
            keep = [i for i in range(n) if i not in set(out)]
            click.echo(t("fit.dropping", n=len(out), names=names), err=True)
            old = det.threshold_
            _fit_or_exit(det, batch.images[keep])
            click.echo(
                t("fit.threshold_change", old=f"{old:.4g}", new=f"{det.threshold_:.4g}"), err=True
            )
            n = len(keep)
        else:
            click.echo(t("fit.outlier_warning", n=len(out), names=names), err=True)
    dt = time.perf_counter() - t0
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        _save(det, output, resize)
    except OSError as exc:
        fail(t("fit.cannot_write", path=output, reason=exc), Exit.INPUT)
    click.echo(
        t(
            "fit.saved",
            path=output,
            detector=detector,
            n=n,
            threshold=f"{det.threshold_:.4g}",
            seconds=f"{dt:.1f}",
        )
    )


def _fit_dask(
    det: Any,
    detector: str,
    good: tuple[str, ...],
    hw: Any,
    max_pixels: int | None,
    strict: bool,
    drop_outliers: bool,
    output: str,
    address: str,
) -> None:
    """``gaikan fit --dask``: the statistics on the cluster, the model written here."""
    import importlib.util

    from ..errors import GaikanError, ParameterError

    if importlib.util.find_spec("distributed") is None:
        fail("--dask needs the distributed extra: pip install 'gaikan[distributed]'")
    from ..distributed import fit_files_dask

    files = [str(f) for f in collect(_good_inputs(good))]

    def run(paths: list[str]) -> Any:
        with progress(len(paths), "fitting") as bar:
            try:
                return fit_files_dask(
                    det, paths, address, size=hw, max_pixels=max_pixels, progress=bar.update
                )
            except ParameterError as exc:
                fail(str(exc), Exit.USAGE)
            except (ValueError, GaikanError) as exc:
                fail(str(exc), Exit.INPUT)

    click.echo(f"fitting {det.kind} on {len(files)} good image files on {address} …", err=True)
    t0 = time.perf_counter()
    res = run(files)
    for _, msg in res.errors:
        click.echo(f"skipped: {msg}", err=True)
    if res.errors and strict:
        fail(f"{len(res.errors)} unreadable image(s) and --strict is set", Exit.INPUT)
    out = _outliers(res.detector, [Path(p) for p in res.paths])
    n = len(res.paths)
    if out:
        names = ", ".join(res.paths[i] for i in out)
        if drop_outliers:
            click.echo(f"dropping {len(out)} outlier(s) from the unit space: {names}", err=True)
            old = res.detector.threshold_
            keep = [p for i, p in enumerate(res.paths) if i not in set(out)]
            res = run(keep)
            click.echo(f"threshold {old:.4g} → {res.detector.threshold_:.4g}", err=True)
            n = len(res.paths)
        else:
            click.echo(
                f"warning: {len(out)} good image(s) score far above the rest of the unit "
                f"space and raise the threshold (defective parts among the good ones?): "
                f"{names}. Check them, or refit with --drop-outliers.",
                err=True,
            )
    dt = time.perf_counter() - t0
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        res.detector.save(output)
    except OSError as exc:
        fail(f"cannot write {output}: {exc}", Exit.INPUT)
    click.echo(
        f"saved {output}: {detector}, {n} images, threshold {res.detector.threshold_:.4g} "
        f"(fit {dt:.1f} s on {address})"
    )


def _save(det: Any, output: str, resize: str) -> None:
    """Write the model file; a padded model's meta records ``resize``."""
    if resize == "stretch":
        det.save(output)  # byte-for-byte what gaikan always wrote
        return
    from ..geometry import stamp
    from ..modelfile import write_model

    det.resize_ = resize
    write_model(output, stamp(det.to_modelfile(), resize))


def _hint_tiles(shapes: list[tuple[int, int]], hw: tuple[int, int]) -> None:
    """Say so when the images are shrunk a lot: thin defects vanish, tiles keep them.

    On synthetic 512 × 1280 parts with hairline cracks, PaDiM stretched to
    256² scored near chance and on 256-px tiles 0.85–0.98
    (``benchmarks/bench_elongated.py``).
    """
    from ..autoselect import TILE_SHRINK, typical_shape  # auto's tiled candidate: same rule

    if not shapes:
        return
    oh, ow = typical_shape(shapes)
    shrink = max(oh / hw[0], ow / hw[1])
    if shrink >= TILE_SHRINK:
        msg = t(
            "fit.hint_tile",
            oh=oh,
            ow=ow,
            h=hw[0],
            w=hw[1],
            shrink=f"{shrink:.1f}",
            px=round(shrink),
        )
        click.echo(msg, err=True)


def _good_inputs(good: tuple[str, ...]) -> tuple[str, ...]:
    """The GOOD arguments, an MVTec AD folder taken through its ``train/good``."""
    from ..io import is_mvtec

    return tuple(str(Path(g) / "train" / "good") if is_mvtec(g) else g for g in good)


def _load_good(
    files: list[Path], hw: Any, max_pixels: int | None, strict: bool, resize: str = "stretch"
) -> Any:
    """The good images of ``files`` (:func:`_good_inputs` collected); exit 3 if none read, or any
    unreadable with --strict."""
    from ..io import load_images

    kw: dict[str, Any] = {} if max_pixels is None else {"max_pixels": max_pixels}
    with progress(len(files), t("progress.loading")) as bar:
        batch = load_images(files, hw, progress=bar.update, resize=resize, **kw)
    for _, msg in batch.errors:
        click.echo(t("fit.skipped", message=msg), err=True)
    if batch.errors and strict:
        fail(t("fit.strict", n=len(batch.errors)), Exit.INPUT)
    if batch.images.shape[0] == 0:
        fail(t("fit.none_read"), Exit.INPUT)
    return batch


def _parse_budget(text: str) -> float:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r}: use seconds (120s) or minutes (2m)")
    return float(m.group(1)) * (60.0 if m.group(2) in ("m", "min") else 1.0)


def _fit_auto(good, output, size, budget_s, seed, max_pixels, strict, resize="stretch") -> None:
    from ..autoselect import PLANTED, explain, select, write_table
    from ..errors import ParameterError
    from ..report import write_auto_report

    if resize == "pad" and size is not None and size[0] != size[1]:
        # candidates are square: a padded non-square frame would be stretched again
        fail("--detector auto with --resize pad needs a square --size (e.g. 256)")
    files = collect(_good_inputs(good))
    hw = size
    if hw is None:  # 256², or a larger working size where tiles may be needed
        hw = (256, 256)
        if resize == "stretch":
            from ..autoselect import working_shape
            from ..io import probe_shapes

            hw = working_shape(probe_shapes(files), len(files)) or hw
    batch = _load_good(files, hw, max_pixels, strict, resize)
    click.echo(t("auto.trying", n=len(batch.paths), budget=f"{budget_s:.0f}"), err=True)
    try:
        res = select(
            batch.images, budget_s=budget_s, seed=seed, log=lambda s: click.echo(s, err=True)
        )
    except ParameterError as exc:
        fail(str(exc), Exit.INPUT)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    _save(res.model, output, resize)
    table = Path(output).with_suffix(".auto.csv")
    write_table(table, res)
    reason = explain(res.why)  # in the CLI's language (--lang)
    page = write_auto_report(
        Path(output).with_suffix(".auto.html"),
        res.rows,
        PLANTED,
        res.best.label,
        reason,
        [c.label for c in res.skipped],
    )
    click.echo(t("auto.chose", label=res.best.label, reason=reason))
    if res.skipped:
        click.echo(t("auto.not_tried", labels=", ".join(c.label for c in res.skipped)))
    threshold = f"{res.model.threshold_:.4g}"
    click.echo(t("auto.saved", output=output, threshold=threshold, table=table, page=page))


COMMANDS = [fit]
