"""``gaikan demo``: the whole job on built-in example data, offline."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ._common import EXIT_CODES_HELP, progress

__all__ = ["demo"]


@click.command(epilog=EXIT_CODES_HELP)
@click.option(
    "-o",
    "--output",
    "output",
    default="gaikan-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the demo's data, model and report.",
)
@click.option(
    "--dataset",
    type=click.Choice(["connectors", "elpv"]),
    default="connectors",
    show_default=True,
    help="Built-in example data (elpv needs gaikan[datasets]).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(output, dataset, seed):
    """Run the whole job on built-in example data, offline.

    connectors: synthesise a small connector set (good parts and pins that
    are missing, pushed in, shifted or tilted), fit SOARTC with the same
    defaults as `gaikan fit` on the good images and inspect the test set as
    `gaikan inspect` does.  elpv: the same on real solar cells (the
    elpv-dataset package).  Writes OUTPUT/report.html.
    """
    from ..i18n import current_lang, t
    from ..inspection import Inspector
    from ..io import find_images, load_images
    from ..report import write_report
    from .fit import build_detector, default_size
    from .inspect import run_inspection

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data_dir = _demo_elpv(out, seed) if dataset == "elpv" else _demo_connectors(out, seed)
    det = build_detector("soartc", None, None, {})
    files = find_images([data_dir / "train" / "good"])
    with progress(len(files), t("progress.loading_good")) as bar:
        batch = load_images(files, default_size("soartc"), progress=bar.update)
    click.echo(t("demo.fitting", n=len(batch.paths)), err=True)
    det.fit(batch.images)
    det.save(out / "model.gaikan")
    inspector = Inspector(det)
    results, _ = run_inspection(inspector, find_images([data_dir / "test"]), out)
    report = write_report(
        out,
        results,
        threshold=inspector.threshold,
        model=f"demo: {det!r}",
        title=t("demo.report_title", dataset=dataset),
        lang=current_lang(),
    )
    flagged = sum(r.verdict == "defect" for r in results)
    defect_files = sum(r.label not in (None, "good") for r in results)
    caught = sum(r.verdict == "defect" and r.label not in (None, "good") for r in results)
    false = sum(r.verdict == "defect" and r.label == "good" for r in results)
    click.echo(
        t(
            "demo.summary",
            dataset=dataset,
            n=len(results),
            flagged=flagged,
            caught=caught,
            defects=defect_files,
            false=false,
            seconds=f"{time.perf_counter() - t0:.0f}",
            report=report.resolve(),
        )
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


COMMANDS = [demo]
