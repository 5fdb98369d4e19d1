"""`gaikan train`: fine-tune a defect classifier on an ImageFolder tree.

No maths here: loading goes through :mod:`gaikan.io`, training through
:mod:`gaikan.deep.classifier`, metrics and figures through
:mod:`gaikan.deep.evaluate`.  torch is imported inside the command.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import click

from ..errors import ParameterError
from ._common import EXIT_CODES_HELP, Exit, fail

__all__ = ["COMMANDS", "load_image_folder", "train"]

VIT_BACKBONES = {"vit-raw": "raw", "vit-soart": "soart"}


def load_image_folder(root: Path, size: int | None):
    """Images and labels of an ImageFolder tree (one sub-folder per class).

    Returns
    -------
    images : ndarray (n, H, W)
    labels : ndarray of str (n,)
    paths : list of Path
    errors : list of (Path, str)
    """
    import numpy as np

    from ..io import find_images, load_images

    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for c in classes:
        found = find_images([c])
        paths += found
        labels += [c.name] * len(found)
    if not paths:
        raise click.ClickException(
            f"{root}: no images found; expected one sub-folder per class (e.g. {root}/good/*.png)"
        )
    res = load_images(paths, size)
    ok = {str(p): i for i, p in enumerate(paths)}
    y = np.array([labels[ok[str(p)]] for p in res.paths])
    return res.images, y, res.paths, res.errors


def write_train_report(out_dir: Path, clf, X_valid, y_valid, lr_plot=None, errors=()) -> Path:
    """HTML report: training curves, validation confusion matrix, metrics, top losses."""
    from ..deep.evaluate import evaluate, plot_confusion_matrix, plot_history, plot_top_losses

    out_dir.mkdir(parents=True, exist_ok=True)
    from ..report import fig_png as _png
    from ..report import html_page

    parts = [
        (
            f"<p>classes: {html.escape(', '.join(map(str, clf.classes_.tolist())))}; "
            f"{clf.n_train_} training and {clf.n_valid_} validation images; "
            f"fit time {clf.fit_time_:.1f} s; best epoch {clf.best_epoch_}.</p>"
        ),
        "<h2>Training curves</h2>",
        f"<img alt='training curves' src='data:image/png;base64,{_png(plot_history(clf.history_))}'>",
    ]
    if lr_plot is not None:
        parts += [
            "<h2>Learning-rate finder</h2>",
            f"<img alt='lr finder' src='data:image/png;base64,{_png(lr_plot)}'>",
        ]
    if X_valid is not None and len(X_valid):
        ev = evaluate(clf, X_valid, y_valid, k=min(9, len(X_valid)))
        m = ev.metrics
        cm = plot_confusion_matrix(m["confusion"], m["labels"])
        parts += [
            f"<h2>Validation: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}</h2>",
            f"<img alt='confusion matrix' src='data:image/png;base64,{_png(cm)}'>",
            (
                "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
                "<th>support</th></tr>"
            ),
        ]
        for r in m["per_class"]:
            parts.append(
                f"<tr><td>{html.escape(str(r['label']))}</td><td>{r['precision']:.3f}</td>"
                f"<td>{r['recall']:.3f}</td><td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>"
            )
        parts.append("</table>")
        idx = ev.top_loss_idx
        maps = clf.explain(X_valid[idx])
        titles = [
            f"true {y_valid[i]} / pred {ev.y_pred[i]}\nloss {loss:.2f} p={ev.proba[i].max():.2f}"
            for i, loss in zip(idx, ev.top_loss_values)
        ]
        gal = plot_top_losses(X_valid[idx], maps, titles)
        parts += [
            "<h2>Top losses (with explanation maps)</h2>",
            f"<img alt='top losses' src='data:image/png;base64,{_png(gal)}'>",
        ]
    if errors:
        parts.append("<h2>Files skipped</h2><ul>")
        parts += [f"<li>{html.escape(str(p))}: {html.escape(msg)}</li>" for p, msg in errors]
        parts.append("</ul>")
    path = out_dir / "index.html"
    page = html_page(f"gaikan train: {type(clf).__name__}", "\n".join(parts))
    path.write_text(page, encoding="utf-8")
    return path


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Model file to write (.gaikan).",
)
@click.option(
    "--backbone",
    default="efficientnet_lite0",
    show_default=True,
    help="efficientnet_lite0/1/2 (offline ImageNet weights), any timm name "
    "(with --no-pretrained), or vit-raw / vit-soart (small ViT from scratch).",
)
@click.option("--pretrained/--no-pretrained", default=True, show_default=True)
@click.option("--epochs", default=5, show_default=True, help="Epochs with the body unfrozen.")
@click.option("--base-lr", default=2e-3, show_default=True, type=float)
@click.option("--freeze-epochs", default=1, show_default=True, help="Head-only epochs first.")
@click.option(
    "--lr-mult",
    default=None,
    type=float,
    help="Head rate / stem rate (discriminative learning rates); default 100 for "
    "pretrained backbones, 1 from scratch; try 10 for images far from photos.",
)
@click.option(
    "--lr-find", "lr_find", is_flag=True, help="Run the LR finder and use its suggestion."
)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--size", default=128, show_default=True, help="Images are loaded at size×size.")
@click.option("--valid-frac", default=0.2, show_default=True, type=float)
@click.option("--patience", default=3, show_default=True, help="Early-stopping patience (epochs).")
@click.option("--hflip", is_flag=True, help="Augment with horizontal flips (symmetric parts only).")
@click.option("--vflip", is_flag=True, help="Augment with vertical flips (symmetric parts only).")
@click.option("--rot90", is_flag=True, help="Augment with 90° rotations (symmetric parts only).")
@click.option(
    "--reference",
    is_flag=True,
    help="Show the network each image next to the mean good image and their difference "
    "(grey images of one fixed view; needs a 'good' class or --good-class).",
)
@click.option(
    "--focus",
    default=None,
    type=click.IntRange(min=8),
    help="Classify a FOCUS-pixel window around the largest difference from the good "
    "parts, at --net-size (small defects); implies --reference.",
)
@click.option("--good-class", default=None, help="Class folder of the good parts (default: good).")
@click.option("--net-size", default=None, type=int, help="Network input size (default: --size).")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--members",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Train this many networks (seeds SEED, SEED+1, ...) and average their "
    "probabilities: a seed ensemble, more accurate and better calibrated, "
    "at MEMBERS x the training and inference time.",
)
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write an HTML report (curves, confusion matrix) here.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    data_dir,
    output,
    backbone,
    pretrained,
    epochs,
    base_lr,
    freeze_epochs,
    lr_mult,
    lr_find,
    batch_size,
    size,
    valid_frac,
    patience,
    hflip,
    vflip,
    rot90,
    reference,
    focus,
    good_class,
    net_size,
    seed,
    members,
    threads,
    device,
    report_dir,
    quiet,
):
    """Fine-tune a defect classifier on DATA_DIR (one sub-folder per class).

    Example: gaikan train parts/ -o parts.gaikan --epochs 5 --report report/
    """
    try:
        from ..deep.classifier import Classifier
        from ..deep.ensemble import ClassifierEnsemble
        from ..deep.vit import ViTClassifier
    except ImportError as exc:
        fail(f"{exc}. Install the deep extra: pip install 'gaikan[deep]'", Exit.USAGE)

    X, y, _paths, errors = load_image_folder(data_dir, size)
    for p, msg in errors:
        click.echo(f"skipped {p}: {msg}", err=True)
    import numpy as np

    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        fail(f"{data_dir}: need at least two class folders with images", Exit.INPUT)
    click.echo(
        f"{len(y)} images, classes: "
        + ", ".join(f"{c} ({n})" for c, n in zip(labels.tolist(), counts.tolist()))
    )
    common = dict(
        batch_size=batch_size,
        valid_frac=valid_frac,
        patience=patience,
        hflip=hflip,
        vflip=vflip,
        rot90=rot90,
        random_state=seed,
        num_threads=threads,
        device=device,
        good_class=good_class,
    )
    if backbone in VIT_BACKBONES:
        if reference or focus is not None or net_size is not None:
            fail("--reference/--focus/--net-size are for CNN backbones", Exit.USAGE)
        clf = ViTClassifier(VIT_BACKBONES[backbone], **common)
    else:
        clf = Classifier(
            backbone,
            pretrained=pretrained,
            image_size=net_size or size,
            reference=reference or focus is not None,
            focus=focus,
            **common,
        )
    if members > 1:
        clf = ClassifierEnsemble(clf, n_members=members)
    lr_plot = None
    try:
        if lr_find:
            res = clf.lr_find(X, y)
            base_lr = res.suggestion
            lr_plot = res.plot()
            click.echo(f"lr_find: suggestion {base_lr:.3g} (min/10 {res.lr_min:.3g})")
        clf.fine_tune(
            X,
            y,
            epochs=epochs,
            base_lr=base_lr,
            freeze_epochs=freeze_epochs,
            lr_mult=lr_mult,
            progress=not quiet,
        )
    except ParameterError as exc:  # a parameter's value (named in the message)
        fail(str(exc), Exit.USAGE)
    except (ValueError, ImportError, RuntimeError) as exc:
        fail(str(exc), Exit.INPUT)
    clf.save(output)
    last = clf.history_[-1] if clf.history_ else {}
    acc = last.get("accuracy")
    click.echo(
        f"wrote {output} ({clf.fit_time_:.1f} s"
        + (
            f", best epoch {clf.best_epoch_}, last valid accuracy {acc:.3f})"
            if acc is not None
            else ")"
        )
    )
    if report_dir is not None:
        vi = getattr(clf, "valid_idx_", None)
        Xv, yv = (X[vi], y[vi]) if vi is not None and len(vi) else (None, None)
        path = write_train_report(report_dir, clf, Xv, yv, lr_plot, errors)
        click.echo(f"report: {path}")
    sys.stdout.flush()


COMMANDS = [train]
