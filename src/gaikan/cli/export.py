"""``gaikan export``: a deep model or classifier → one graph in a torch-free gaikan model file."""

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
    help="The exported model file (kind onnx-detector or onnx-classifier).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "openvino"]),
    default="onnx",
    show_default=True,
    help="Graph format: onnx (run by ONNX Runtime: pip install 'gaikan[runtime]') or "
    "openvino (OpenVINO IR, run by OpenVINO: pip install 'gaikan[openvino]').",
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
@click.option(
    "--int8-experimental",
    "int8",
    multiple=True,
    type=click.Path(exists=True),
    help="EXPERIMENTAL, not adopted (docs/export.md, 'int8'): quantise the backbone's "
    "convolutions to int8, calibrated on these good images (files or folders; repeatable). "
    "Deep detectors only. Scores move while the threshold stays the float model's.",
)
def export(model, output, fmt, check, opset, threads, int8):
    """Export a fitted deep MODEL to one graph (ONNX or OpenVINO IR).

    Deep detectors (padim, patchcore, soart-deep): the graph goes from the
    grey image batch to the patch grid, the image score and the anomaly
    map, with resize, normalisation, backbone, feature aggregation, the
    Mahalanobis / nearest-neighbour stage, upsampling and blur inside.
    Classifiers (classifier, raw-input vit-classifier, classifier-ensemble):
    from the grey image batch to the class probabilities, with the input
    pipeline (reference channels, focus window, resize, normalisation), the
    network(s) and the ensemble mean inside; explanation maps are not
    exported.  OUTPUT is a gaikan model file that `gaikan inspect`, `serve`
    and `watch` open without torch.  The export is refused (exit 5) unless
    it matches MODEL on the check images (detectors: scores within 1e-4
    relative, maps within 1e-3 normalised; classifiers: probabilities within
    1e-4 relative or 1e-5 absolute; identical verdicts).
    """
    from ..errors import ParameterError

    try:
        from ..deep.export import ExportCheckError, export_model
    except ImportError as exc:
        fail(f"exporting needs the deep extra: pip install 'gaikan[deep]' ({exc})", Exit.MODEL)
    from ..geometry import resize_mode, stamp

    det = load_model(model)
    mode = resize_mode(det)  # a padded model's export pads too
    images = None
    if check:
        from ..io import classifier_image_shape, load_images

        shape = (
            tuple(det.image_shape_) if hasattr(det, "image_shape_") else classifier_image_shape(det)
        )
        files = collect(check)
        batch = load_images(files, shape, resize=mode) if shape is not None else None
        if batch is None or not len(batch.paths):
            fail("none of the --check images could be read", Exit.INPUT)
        images = batch.images
    kw = {}
    if int8:
        from ..io import load_images

        if not hasattr(det, "image_shape_"):
            fail("--int8-experimental applies to deep detectors only", Exit.MODEL)
        cal = load_images(collect(int8), tuple(det.image_shape_), resize=mode)
        if not len(cal.paths):
            fail("none of the --int8-experimental images could be read", Exit.INPUT)
        kw["int8_calibration"] = cal.images
    try:
        exported = export_model(
            det, fmt=fmt, opset=opset, check_images=images, num_threads=threads, **kw
        )
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
    if "proba_abs" in c:
        errors = (
            f"probability error {c['proba_abs']:.2g} absolute, {c['proba_rel']:.2g} relative, "
            "verdicts and classes equal"
        )
    else:
        errors = (
            f"score error {c['score_rel']:.2g} relative, map error {c['map_abs']:.2g} "
            "normalised, verdicts equal"
        )
    click.echo(
        f"exported {exported.source_kind_} → {output} ({fmt}, opset {opset}); checked on "
        f"{c['n']} images: {errors}"
    )
    if int8:
        q = exported.export_info_["int8"]["check"]
        click.echo(
            f"int8 (experimental): calibrated on {kw['int8_calibration'].shape[0]} images; "
            f"against the source: score error {q['score_rel']:.2g} relative, map error "
            f"{q['map_abs']:.2g} normalised, verdicts equal: {q['verdicts_equal']}"
        )


COMMANDS = [export]
