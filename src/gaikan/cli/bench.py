"""``gaikan bench``: compare detectors on a data set (accuracy, speed, memory)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from ._common import EXIT_CODES_HELP, Exit, fail, parse_params, parse_size, split_top
from .fit import default_size

__all__ = ["bench"]


@click.command(epilog=EXIT_CODES_HELP)
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
    for key, val in parse_params(params).items():
        det, dot, name = key.partition(".")
        if not dot:
            fail(f"-p {key}: use DETECTOR.KEY=VALUE")
        per_det.setdefault(det, {})[name] = val
    plan = []
    for entry in split_top(detectors, ","):
        m = re.fullmatch(r"\s*([\w-]+)\s*(?:\[(.*)\])?\s*", entry)
        if not m:
            fail(f"--detectors: cannot parse {entry!r}")
        kind, inline = m.group(1), m.group(2)
        try:
            names = set(get_detector_class(kind)._param_names())
        except (ValueError, ImportError) as exc:
            fail(str(exc))
        p = dict(per_det.get(kind, {}))
        if inline:
            p.update(parse_params(tuple(x.strip() for x in split_top(inline, ";") if x.strip())))
        for k, v in (("kernel", kernel), ("stride", stride)):
            if v is not None and k in names:
                p.setdefault(k, v)
        plan.append((kind, p))
    hw = parse_size(size)
    if hw is None:
        deep = any(k in DEEP_KINDS for k, _ in plan)
        hw = (
            (128, 128)
            if dataset.startswith("connectors")
            else default_size("padim" if deep else "soartc")
        )
    if not (dataset.startswith(("elpv", "connectors")) or Path(dataset).is_dir()):
        fail(f"{dataset}: not a folder, and not one of elpv, elpv-mono, elpv-poly, connectors")
    click.echo(f"# gaikan bench {dataset} at {hw[0]}x{hw[1]}, seed {seed}, {threads_note()}")
    rows = run_bench(dataset, plan, hw, seed=seed, batch_size=batch_size)
    click.echo(format_table(rows))
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=1, default=str))
    if all("error" in r for r in rows):
        raise SystemExit(int(Exit.INTERNAL))


COMMANDS = [bench]
