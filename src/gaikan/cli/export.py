"""``gaikan export``: a deep model → one ONNX graph in a torch-free gaikan model file."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import EXIT_CODES_HELP, Exit, collect, fail, load_model

__all__ = ["export"]


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The exported model file (kind onnx-detector).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx"]),
    default="onnx",
    show_default=True,
    help="Graph format (run by ONNX Runtime: pip install 'gaikan[runtime]').",
)
@click.option(
    "--check",
    "check",
    multiple=True,
    type=click.Path(exists=True),
    help="Images (files or folders) the export is verified on; repeatable. "
    "Default: a synthetic batch. Give good and defective parts.",
)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="ONNX Runtime threads the exported model uses (default: one per core).",
)
def export(model, output, fmt, check, opset, threads):
    """Export a fitted deep MODEL (padim, patchcore, soart-deep) to one ONNX graph.

    The graph goes from the grey image batch to the patch grid, the image
    score and the anomaly map, with resize, normalisation, backbone,
    feature aggregation, the Mahalanobis / nearest-neighbour stage,
    upsampling and blur inside.  OUTPUT is a gaikan model file that
    `gaikan inspect` and `gaikan serve` open with numpy and ONNX Runtime
    only (no torch).  The export is refused unless it scores like MODEL on
    the check images (scores within 1e-4 relative, maps within 1e-3 of
    max(threshold, the map's peak), identical verdicts).
    """
    from ..errors import ParameterError

    try:
        from ..deep.export import ExportCheckError, export_detector
    except ImportError as exc:
        fail(f"exporting needs the deep extra: pip install 'gaikan[deep]' ({exc})", Exit.MODEL)
    from ..geometry import resize_mode, stamp

    det = load_model(model)
    mode = resize_mode(det)  # a padded model's export pads too
    images = None
    if check:
        from ..io import load_images

        files = collect(check)
        batch = (
            load_images(files, tuple(det.image_shape_), resize=mode)
            if hasattr(det, "image_shape_")
            else None
        )
        if batch is None or not len(batch.paths):
            fail("none of the --check images could be read", Exit.INPUT)
        images = batch.images
    try:
        exported = export_detector(det, opset=opset, check_images=images, num_threads=threads)
    except ParameterError as exc:
        fail(str(exc), Exit.MODEL)
    except ExportCheckError as exc:
        fail(str(exc), Exit.INTERNAL)
    if mode == "stretch":
        exported.save(Path(output))
    else:
        from ..modelfile import write_model

        exported.resize_ = mode
        write_model(Path(output), stamp(exported.to_modelfile(), mode))
    c = exported.export_info_["check"]
    click.echo(
        f"exported {exported.source_kind_} → {output} ({fmt}, opset {opset}); checked on "
        f"{c['n']} images: score error {c['score_rel']:.2g} relative, map error "
        f"{c['map_abs']:.2g} normalised, verdicts equal"
    )


COMMANDS = [export]
