"""How a classifier is trained: fastai's ``fine_tune`` recipe.

(Howard & Gugger, "Fastai: a layered API for deep learning", 2020.)

1. *frozen stage*: the body is frozen (BatchNorm layers stay trainable, so
   their statistics adapt to the new images) and the new head trains for
   ``freeze_epochs`` epochs on a one-cycle schedule that peaks late
   (``pct_start=0.99``); the body's groups get ``base_lr/10``;
2. *unfrozen stage*: everything trains for ``epochs`` epochs on a one-cycle
   schedule (``pct_start=0.3``, ``div=5``) with discriminative learning
   rates: layer group ``i`` of ``k`` peaks at
   ``base_lr/lr_mult · lr_mult^(i/(k-1))``, i.e. geometrically from
   ``base_lr/lr_mult`` (stem) to ``base_lr`` (head).

The optimiser is AdamW (decoupled weight decay, none on biases and norm
weights); Adam's β₁ follows the one-cycle momentum schedule 0.95 → 0.85 →
0.95.  After every epoch BatchNorm statistics are recomputed exactly
("precise BN"); the weights with the lowest validation loss are kept
(early stopping with ``patience``).

Here: the schedules (pure numpy, golden-tested), the seeded stratified
split, layer groups and the optimiser, :class:`Stage` and
:func:`plan_stages` (what to train at which rates), :class:`TrainingRun`
(the epoch loop) and :func:`lr_sweep` (Smith's learning-rate finder).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._optional import require
from ...errors import ParameterError
from .network import logits

__all__ = [
    "LRFindResult",
    "Stage",
    "TrainingRun",
    "batches",
    "cos_anneal",
    "discriminative_lrs",
    "freeze_body",
    "layer_groups",
    "lr_sweep",
    "make_optimizer",
    "one_cycle_schedule",
    "plan_stages",
    "recalibrate_bn",
    "stratified_split",
    "suggest_lr",
]


# ---------------------------------------------------------------------------
# schedules (pure numpy, golden-tested)
# ---------------------------------------------------------------------------
def cos_anneal(start: float | np.ndarray, end: float | np.ndarray, pct: float) -> Any:
    """Cosine interpolation from ``start`` (pct=0) to ``end`` (pct=1)."""
    return end + (np.asarray(start) - end) / 2.0 * (1.0 + math.cos(math.pi * pct))


def one_cycle_schedule(
    n_steps: int,
    lr_max: float | Sequence[float] | np.ndarray,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
) -> tuple[np.ndarray, np.ndarray]:
    """One-cycle learning-rate and momentum schedule (Smith, 2018; fastai).

    Step ``i`` sits at position ``p = i / n_steps``.  Before ``pct_start``
    the learning rate rises from ``lr_max/div`` to ``lr_max`` on a half
    cosine while the momentum falls from ``moms[0]`` to ``moms[1]``; after
    it the rate falls to ``lr_max/div_final`` and the momentum returns to
    ``moms[2]``.

    Parameters
    ----------
    n_steps : int
        Optimiser steps in the stage (epochs × batches per epoch).
    lr_max : float or sequence of float, length g
        Peak rate of each parameter group.

    Returns
    -------
    lrs : ndarray, shape (n_steps, g)
    moms : ndarray, shape (n_steps,)
    """
    peak = np.atleast_1d(np.asarray(lr_max, dtype=np.float64))
    if n_steps < 1:
        raise ParameterError("n_steps must be at least 1")
    if not 0.0 < pct_start <= 1.0:
        raise ParameterError("pct_start must be in (0, 1]")
    lrs = np.empty((n_steps, peak.size))
    mom = np.empty(n_steps)
    for i in range(n_steps):
        p = i / n_steps
        if p < pct_start:
            q = p / pct_start
            lrs[i] = cos_anneal(peak / div, peak, q)
            mom[i] = cos_anneal(moms[0], moms[1], q)
        else:
            q = (p - pct_start) / (1.0 - pct_start) if pct_start < 1.0 else 1.0
            lrs[i] = cos_anneal(peak, peak / div_final, q)
            mom[i] = cos_anneal(moms[1], moms[2], q)
    return lrs, mom


def discriminative_lrs(base_lr: float, lr_mult: float, n_groups: int) -> np.ndarray:
    """Peak rates spaced geometrically from ``base_lr/lr_mult`` to ``base_lr``.

    Returns
    -------
    ndarray, shape (n_groups,)
        First group (stem) lowest, last group (head) ``base_lr``.
    """
    if n_groups == 1:
        return np.array([float(base_lr)])
    lo = base_lr / lr_mult
    return lo * lr_mult ** (np.arange(n_groups) / (n_groups - 1))


def stratified_split(
    y: np.ndarray, valid_frac: float, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/validation split.

    Each class puts ``round(valid_frac · n_c)`` images (at least one when it
    has two or more) in the validation set.

    Returns
    -------
    train, valid : ndarray of int
        Sorted indices.
    """
    y = np.asarray(y)
    if valid_frac <= 0:
        return np.arange(y.size), np.empty(0, dtype=int)
    rng = np.random.default_rng(random_state)
    valid = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(valid_frac * idx.size)
        if idx.size >= 2:
            k = min(max(k, 1), idx.size - 1)
        else:
            k = 0
        valid.append(idx[:k])
    v = np.sort(np.concatenate(valid)).astype(int)
    t = np.setdiff1d(np.arange(y.size), v)
    return t, v


# ---------------------------------------------------------------------------
# parameter groups and the optimiser
# ---------------------------------------------------------------------------
def layer_groups(model: Any, n_groups: int) -> list[list]:
    """Parameters split into ``n_groups`` groups: ``n_groups − 1`` consecutive body parts, then the head.

    The body's units are the model's direct parameters and its children
    (the members of a ``Sequential`` child counted one by one), split into
    ``n_groups − 1`` runs of about equal length.
    """
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    units: list[list] = []
    direct = list(model.parameters(recurse=False))
    torch = require("torch", "deep")
    for child in model.children():
        subs = list(child.children()) if isinstance(child, torch.nn.Sequential) else []
        for m in subs or [child]:
            ps = [p for p in m.parameters() if id(p) not in head_ids]
            if ps:
                units.append(ps)
    if direct:
        units.insert(0, [p for p in direct if id(p) not in head_ids])
    n_body = max(1, n_groups - 1)
    chunks = np.array_split(np.arange(len(units)), min(n_body, len(units)))
    groups = [[p for i in ch for p in units[i]] for ch in chunks]
    groups.append(list(head.parameters()) if head is not None else [])
    return groups


def make_optimizer(groups: list[list], weight_decay: float) -> Any:
    """AdamW with two torch parameter groups per layer group: weights decay, biases and norms do not.

    Torch group ``j`` belongs to layer group ``j // 2``.
    """
    torch = require("torch", "deep")
    pgs = []
    for g in groups:
        decay = [p for p in g if p.ndim > 1]
        no_decay = [p for p in g if p.ndim <= 1]
        pgs.append({"params": decay, "weight_decay": weight_decay})
        pgs.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(pgs, lr=1e-3, betas=(0.95, 0.99), eps=1e-5)


def freeze_body(model: Any, groups: list[list], frozen: bool) -> None:
    """Freeze (or unfreeze) every group but the head; BatchNorm parameters always train."""
    torch = require("torch", "deep")
    bn_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            bn_ids.update(id(p) for p in m.parameters(recurse=False))
    for g in groups[:-1]:
        for p in g:
            p.requires_grad_(not frozen or id(p) in bn_ids)
    for p in groups[-1]:
        p.requires_grad_(True)


def batches(n: int, batch_size: int, gen: Any) -> list:
    """A shuffled epoch: index tensors of ``batch_size`` (a last single image joins the one before)."""
    torch = require("torch", "deep")
    perm = torch.randperm(n, generator=gen)
    out = [perm[s : s + batch_size] for s in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) < 2:  # BatchNorm cannot train on one image
        out[-2] = torch.cat([out[-2], out[-1]])
        out.pop()
    return out


def recalibrate_bn(
    model: Any,
    x: Any,
    gen: Any,
    *,
    max_images: int,
    batch_size: int,
    expand: Callable[[Any], Any],
    device: str,
) -> None:
    """Precise BN: exact running statistics on up to ``max_images`` images of ``x``.

    Every BatchNorm's running mean and variance become the cumulative
    average over a seeded sample of ``x`` (no augmentation); 0 images: off.
    """
    torch = require("torch", "deep")
    if not max_images:
        return
    bns = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return
    n = min(int(max_images), x.shape[0])
    idx = torch.randperm(x.shape[0], generator=gen)[:n]
    moms = [m.momentum for m in bns]
    was_training = model.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        model.train()
        with torch.no_grad():
            bs = max(batch_size, 2)
            for s in range(0, n, bs):
                b = idx[s : s + bs]
                if len(b) < 2:
                    break
                model(expand(x[b]).to(device))
    finally:
        for m, mo in zip(bns, moms):
            m.momentum = mo
        model.train(was_training)


# ---------------------------------------------------------------------------
# stages and the epoch loop
# ---------------------------------------------------------------------------
@dataclass
class Stage:
    """One stage of fine-tuning: ``epochs`` epochs on one one-cycle schedule.

    Attributes
    ----------
    name : {"frozen", "unfrozen"}
        A frozen stage trains only the head (and BatchNorm).
    epochs : int
    lrs : ndarray, shape (n_groups,)
        Peak rate of each layer group.
    pct_start, div : float
        One-cycle parameters (:func:`one_cycle_schedule`).
    """

    name: str
    epochs: int
    lrs: np.ndarray
    pct_start: float
    div: float

    @property
    def frozen(self) -> bool:
        return self.name == "frozen"


def plan_stages(
    n_groups: int,
    *,
    base_lr: float,
    epochs: int,
    freeze_epochs: int,
    lr_mult: float,
    pct_start: float,
    div: float,
) -> list[Stage]:
    """fastai's two stages: frozen (body ``base_lr/10``, late peak), then discriminative rates."""
    stages = []
    if freeze_epochs > 0:
        lrs = np.r_[np.full(n_groups - 1, base_lr / 10), base_lr]
        stages.append(Stage("frozen", freeze_epochs, lrs, 0.99, 25.0))
    if epochs > 0:
        lrs = discriminative_lrs(base_lr, lr_mult, n_groups)
        stages.append(Stage("unfrozen", epochs, lrs, pct_start, div))
    return stages


@dataclass
class _Best:
    loss: float = math.inf
    state: dict | None = None
    epoch: int = -1


@dataclass
class TrainingRun:
    """The epoch loop of one fine-tuning run, and its record.

    Attributes
    ----------
    model, opt : torch module and optimiser (:func:`make_optimizer`)
    groups : list of list of parameters (:func:`layer_groups`)
    xt, yt : tensors (n, c, h, w) and (n,)
        Encoded training images and class indices.
    xv, yv : tensors or None
        Encoded validation set (None: no validation, no early stopping).
    gen : torch.Generator
        Shuffling, augmentation and the precise-BN sample.
    prepare : callable (batch, gen) → batch
        Network input of a training batch (expansion and augmentation).
    expand : callable batch → batch
        Network input of an evaluation batch.
    device : str
    batch_size, label_smoothing, patience, precise_bn, chunk
        As the classifier's parameters; ``chunk``: evaluation batch size.
    progress : bool or callable
        A tqdm bar (True) or a callback given every epoch's record.
    history : list of dict
        One record per epoch: stage, epoch, train_loss, valid_loss,
        accuracy, lr (the head's last rate), time.
    """

    model: Any
    opt: Any
    groups: list[list]
    xt: Any
    yt: Any
    xv: Any
    yv: Any
    gen: Any
    prepare: Callable[[Any, Any], Any]
    expand: Callable[[Any], Any]
    device: str
    batch_size: int
    label_smoothing: float
    patience: int | None
    precise_bn: int
    chunk: int
    progress: bool | Callable[[dict], None] = False
    history: list[dict] = field(default_factory=list)
    best: _Best = field(default_factory=_Best)
    _bar: Any = None

    def fit(self, stages: Sequence[Stage]) -> int:
        """Train every stage, then restore the best weights (by validation loss).

        Returns
        -------
        int
            The best epoch (-1 without a validation set).
        """
        if self.progress is True:
            from tqdm.auto import tqdm

            total = sum(s.epochs for s in stages)
            self._bar = tqdm(total=total, desc="fine-tune", unit="epoch")
        try:
            for stage in stages:
                freeze_body(self.model, self.groups, stage.frozen)
                self.run(stage)
        finally:
            if self._bar is not None:
                self._bar.close()
            for p in self.model.parameters():
                p.requires_grad_(True)
        if self.best.state is not None:
            self.model.load_state_dict(self.best.state)
        return self.best.epoch

    def run(self, stage: Stage) -> None:
        """Train one stage; stop early after ``patience`` epochs without a lower validation loss."""
        torch = require("torch", "deep")
        n = self.xt.shape[0]
        n_batches = len(batches(n, self.batch_size, torch.Generator().manual_seed(0)))
        sched_lr, sched_mom = one_cycle_schedule(
            stage.epochs * n_batches, stage.lrs, pct_start=stage.pct_start, div=stage.div
        )
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        step = 0
        bad = 0
        stage_best = math.inf
        for ep in range(stage.epochs):
            te = time.perf_counter()
            self.model.train()
            tot, cnt = 0.0, 0
            for idx in batches(n, self.batch_size, self.gen):
                for j, g in enumerate(self.opt.param_groups):
                    g["lr"] = float(sched_lr[step, j // 2])
                    g["betas"] = (float(sched_mom[step]), 0.99)
                xb = self.prepare(self.xt[idx], self.gen).to(self.device)
                yb = self.yt[idx].to(self.device)
                loss = loss_fn(self.model(xb), yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                tot += float(loss.detach()) * len(idx)
                cnt += len(idx)
                step += 1
            recalibrate_bn(
                self.model,
                self.xt,
                self.gen,
                max_images=self.precise_bn,
                batch_size=self.batch_size,
                expand=self.expand,
                device=self.device,
            )
            rec: dict[str, Any] = {
                "stage": stage.name,
                "epoch": len(self.history),
                "train_loss": tot / max(cnt, 1),
            }
            if self.xv is not None:
                vl, acc = self.evaluate(loss_fn)
                rec.update(valid_loss=vl, accuracy=acc)
            rec["lr"] = float(sched_lr[min(step, len(sched_lr)) - 1, -1])
            rec["time"] = time.perf_counter() - te
            self.history.append(rec)
            self._report(rec)
            if self.xv is not None:
                if rec["valid_loss"] < self.best.loss:
                    self.best = _Best(
                        rec["valid_loss"], copy.deepcopy(self.model.state_dict()), rec["epoch"]
                    )
                if rec["valid_loss"] < stage_best - 1e-6:
                    stage_best, bad = rec["valid_loss"], 0
                else:
                    bad += 1
                    if self.patience is not None and bad >= self.patience:
                        if self._bar is not None:
                            self._bar.update(stage.epochs - ep - 1)
                        break

    def evaluate(self, loss_fn: Any) -> tuple[float, float]:
        """(loss, accuracy) on the validation set."""
        out = logits(self.model, self.xv, chunk=self.chunk, expand=self.expand, device=self.device)
        loss = float(loss_fn(out, self.yv))
        acc = float((out.argmax(1) == self.yv).float().mean())
        return loss, acc

    def _report(self, rec: dict) -> None:
        if self._bar is not None:
            shown = ("train_loss", "valid_loss", "accuracy")
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in shown})
            self._bar.update(1)
        elif callable(self.progress):
            self.progress(dict(rec))


# ---------------------------------------------------------------------------
# learning-rate finder
# ---------------------------------------------------------------------------
@dataclass
class LRFindResult:
    """Outcome of :meth:`Classifier.lr_find`.

    Attributes
    ----------
    lrs, losses : ndarray
        Tried rates and the smoothed training loss after each step.
    suggestion : float
        Rate at the steepest descent of the smoothed loss (before its
        minimum), capped at ``lr_min``.
    lr_min : float
        Rate of the minimum loss divided by 10 (fastai's "minimum").
    lr_steep : float
        Rate of the steepest descent.
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float
    lr_min: float
    lr_steep: float

    def plot(self, ax=None):
        """Loss against learning rate (log axis) with the suggestion marked."""
        import matplotlib

        if ax is None:
            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.5))
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        ax.axvline(self.suggestion, color="r", ls="--", label=f"suggestion {self.suggestion:.2g}")
        ax.legend()
        return fig


def suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, float, float]:
    """(suggestion, lr_min, lr_steep) of a sweep; see :class:`LRFindResult`."""
    i_min = int(np.argmin(losses))
    lr_min = float(lrs[i_min] / 10)
    loglr = np.log10(lrs)
    upto = max(i_min, 2)
    grad = np.gradient(losses[: upto + 1], loglr[: upto + 1])
    i_steep = int(np.argmin(grad))
    lr_steep = float(lrs[i_steep])
    return float(min(lr_steep, lrs[i_min])), lr_min, lr_steep


def lr_sweep(
    model: Any,
    opt: Any,
    xt: Any,
    yt: Any,
    gen: Any,
    *,
    prepare: Callable[[Any, Any], Any],
    device: str,
    batch_size: int,
    start_lr: float,
    end_lr: float,
    num_it: int,
    beta: float,
    stop_div: float,
) -> LRFindResult:
    """Exponential learning-rate sweep (Smith, 2015): one mini-batch per rate.

    The rate grows geometrically from ``start_lr`` to ``end_lr`` over
    ``num_it`` steps; the exponentially smoothed loss (bias-corrected) is
    recorded and the sweep stops once it exceeds ``stop_div`` × its minimum.
    """
    torch = require("torch", "deep")
    loss_fn = torch.nn.CrossEntropyLoss()
    lrs, losses = [], []
    avg, best = 0.0, math.inf
    model.train()
    it = 0
    while it < num_it:
        for idx in batches(xt.shape[0], batch_size, gen):
            lr = start_lr * (end_lr / start_lr) ** (it / max(num_it - 1, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            xb = prepare(xt[idx], gen).to(device)
            loss = loss_fn(model(xb), yt[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            val = float(loss.detach())
            avg = beta * avg + (1 - beta) * val
            sm = avg / (1 - beta ** (it + 1))
            it += 1
            if not math.isfinite(sm):
                break
            lrs.append(lr)
            losses.append(sm)
            best = min(best, sm)
            if sm > stop_div * best or it >= num_it:
                it = num_it
                break
    lrs_a, losses_a = np.asarray(lrs), np.asarray(losses)
    sug, lr_min, lr_steep = suggest_lr(lrs_a, losses_a)
    return LRFindResult(lrs_a, losses_a, sug, lr_min, lr_steep)
