"""`gaikan synth`: render a synthetic connector dataset (no maths here)."""

from __future__ import annotations

import click

from ._common import EXIT_CODES_HELP, Exit, fail

__all__ = ["COMMANDS", "synth"]


def _csv(ctx, param, value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise click.BadParameter("give at least one value (comma-separated)")
    return items


@click.command("synth", epilog=EXIT_CODES_HELP)
@click.argument("out_dir", type=click.Path(file_okay=False, writable=True))
@click.option(
    "--layout",
    type=click.Choice(["square", "cylinder", "mixed"]),
    default="mixed",
    show_default=True,
    help="Pin shapes: all square, all cylinders, or a mix (see --pattern).",
)
@click.option(
    "--pattern",
    default=None,
    help="Mixed layout: checker (default), column, rows, or 27 characters of s/c (row-major).",
)
@click.option(
    "--n-good",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="Good training images (unit space).",
)
@click.option(
    "--n-test-good", type=click.IntRange(0), default=50, show_default=True, help="Good test images."
)
@click.option(
    "--n-defect",
    type=click.IntRange(0),
    default=30,
    show_default=True,
    help="Test images per defect mode.",
)
@click.option(
    "--defects",
    default="missing,pushed,tilt_x,tilt_y,shifted",
    show_default=True,
    callback=_csv,
    help="Comma-separated modes; join modes with '+' for a combination on one pin (pushed+tilt_x).",
)
@click.option(
    "--views",
    default="top,oblique",
    show_default=True,
    callback=_csv,
    help="Comma-separated cameras: top, oblique, oblique_y.",
)
@click.option(
    "--size",
    type=click.IntRange(16, 4096),
    default=128,
    show_default=True,
    help="Image side in pixels.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed → byte-identical files."
)
@click.option(
    "--workers", type=click.IntRange(1), default=1, show_default=True, help="Rendering processes."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mvtec", "classes"]),
    default="mvtec",
    show_default=True,
    help="mvtec: <view>/train|test|ground_truth; classes: ImageFolder <view>/<class>/.",
)
@click.option(
    "--supersample",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="s×s rays per pixel (anti-aliasing; s² times slower).",
)
@click.option(
    "--renderer",
    type=click.Choice(["numpy", "blender"]),
    default="numpy",
    show_default=True,
    help="numpy: built-in ray caster; blender: Blender's Cycles (photoreal, slower; "
    'pip install "gaikan[blender]" or --blender PATH).',
)
@click.option(
    "--blender",
    "--blender-python",
    "blender",
    type=click.Path(dir_okay=False),
    default=None,
    help="The Blender application (blender, run as blender -b) or a Python that can import bpy; "
    "default: bpy in this Python, else blender on PATH.",
)
@click.option(
    "--samples",
    type=click.IntRange(1),
    default=None,
    help="Blender: Cycles paths per pixel (default 32, denoised).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Blender: Cycles threads per process (files do not depend on it).",
)
def synth(out_dir, layout, pattern, n_good, n_test_good, n_defect, defects, views, size, seed, workers, fmt,
          supersample, renderer, blender, samples, threads) -> None:  # fmt: skip
    """Render connectors with planted pin defects and exact masks into OUT_DIR.

    Writes one MVTec AD folder per view (train/good, test/good,
    test/<defect>, ground_truth/<defect>/*_mask.png) plus labels.jsonl, e.g.

    \b
        gaikan synth out --n-good 200 --n-defect 30 --views top,oblique --workers 2
        gaikan synth out --renderer blender --n-good 30 --samples 32

    With --renderer blender, --workers runs that many Blender processes side by side.
    """
    from tqdm import tqdm

    from ..errors import GaikanError
    from ..synth import count_images, make_dataset
    from ..synth.scene import parse_defect

    try:
        for d in defects:
            parse_defect(d)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--defects") from None
    if renderer != "blender" and (blender or samples is not None):
        raise click.UsageError("--blender and --samples need --renderer blender")
    total = count_images(n_good, n_test_good, n_defect, defects, views)
    with tqdm(total=total, unit="img", desc="synth", disable=None) as bar:
        try:
            out = make_dataset(
                out_dir, layout=layout, n_good=n_good, n_test_good=n_test_good, n_defect=n_defect,
                defects=defects, views=views, size=size, seed=seed, workers=workers, format=fmt,
                progress=bar.update, supersample=supersample, pattern=pattern, renderer=renderer,
                blender=blender, samples=samples, threads=threads,
            )  # fmt: skip
        except (ValueError, GaikanError) as e:  # a bad option value, or no Blender to be had
            fail(str(e), Exit.USAGE)
    click.echo(f"wrote {total} images ({', '.join(views)}) to {out}")


COMMANDS = [synth]
