"""Refit from reviewed goods: a candidate model version from the unit space plus operator-confirmed good parts.

The candidate is :func:`gaikan._params.clone` of the served detector (the
same kind and parameters, no fitted state) fitted on

- the **unit space**: the good images in the folder given to
  ``gaikan serve --unit-space DIR`` (the station never opens a path named
  inside a model file or a record), loaded at the model's image size, and
- the **reviewed goods**: the stored images of the served model's records
  that an operator reviewed as ``ok`` (confirmed OKs and overridden false
  alarms; the newest :data:`MAX_GOODS`), decoded at the same size; an
  image whose SHA-256 is already in the unit space or in an earlier record
  is used once.

The candidate is written as a model file to ``models/`` next to the
database and registered as a new, **inactive** version (its parent is the
served version).  Before anyone activates it, the stored images of past
records are scored by it: how many NG the new model would call OK and how
many OK it would call NG (only records whose image is still kept can be
re-scored; the counts say how many were).

Nothing here imports a web framework.  Refusals are :class:`RefitRefused`
with the HTTP status the station answers (409: the station's state or data
must change first; 422: the served model cannot be refitted).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GaikanError

__all__ = [
    "MAX_GOODS",
    "MAX_RESCORE",
    "RefitRefused",
    "build_candidate",
    "check_refittable",
    "models_dir_for",
    "relabel_counts",
    "reviewed_goods",
    "unit_space_files",
]

#: Most past records (newest first, per model verdict) re-scored by a candidate.
MAX_RESCORE = 5000
#: Most past records looked at (newest first) to find those with a kept image.
MAX_SCAN = 50_000
#: Most reviewed goods one refit adds to the unit space (the newest ones).
MAX_GOODS = 1000
#: Images scored per model call while re-scoring.
_CHUNK = 64
#: Ids listed per re-label direction in the answer (the counts are complete).
_MAX_IDS = 200


class RefitRefused(GaikanError):
    """A refit cannot start; ``status`` is the HTTP status (409 or 422).

    Parameters
    ----------
    status : int
    message : str
        What is missing and how to fix it.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_refittable(model: Any) -> None:
    """Refuse (422) a model that has no fit: classifiers, exported ONNX models, foreign objects.

    Raises
    ------
    RefitRefused
    """
    from .._params import ParamsMixin
    from ..detectors.registry import model_family

    kind = str(getattr(type(model), "kind", "") or "")
    if kind == "onnx-detector":
        source = getattr(model, "source_kind_", None) or "the source detector"
        raise RefitRefused(
            422,
            "this station serves an exported (onnx-detector) model, which has no fit: refit "
            f"needs the source model — serve the {source} model file (gaikan serve SOURCE "
            "--unit-space DIR), refit and activate there, then export the new version again",
        )
    try:
        family = model_family(model)
    except GaikanError:
        family = None
    if family == "classifier":
        raise RefitRefused(
            422,
            "refit from reviewed goods applies to anomaly detectors (a unit space of good "
            "parts); retrain this classifier with gaikan train on labelled folders",
        )
    if family != "detector" or not isinstance(model, ParamsMixin):
        raise RefitRefused(
            422,
            f"the served {type(model).__name__} is not a gaikan detector with parameters, so it "
            "cannot be cloned and refitted; serve a model file written by gaikan fit",
        )


def unit_space_files(unit_space: str | os.PathLike | None) -> list[Path]:
    """The image files of the unit-space folder (refused with 409 when none).

    Raises
    ------
    RefitRefused
        No folder configured, no such folder, or no image files in it.
    """
    from ..io import find_images

    if unit_space is None:
        raise RefitRefused(
            409,
            "no unit space: start the station with gaikan serve MODEL --unit-space DIR, DIR "
            "being the folder of good images the model was fitted on",
        )
    root = Path(unit_space)
    if not root.is_dir():
        raise RefitRefused(
            409, f"the unit-space folder {root} is not a directory; check --unit-space"
        )
    files = find_images([root])
    if not files:
        raise RefitRefused(
            409,
            f"the unit-space folder {root} holds no images (png, jpg, bmp, tif); "
            "point --unit-space at the good images the model was fitted on",
        )
    return files


def reviewed_goods(store: Any, model_id: str | None, limit: int = MAX_GOODS) -> list[Any]:
    """Records of ``model_id`` an operator reviewed as ok whose image is still stored.

    The newest ``limit`` of them (among the newest :data:`MAX_SCAN`
    reviewed as ok), returned oldest first.

    Raises
    ------
    RefitRefused
        (409) there are none.
    """
    from ..records import Filters

    recs = store.query(
        Filters(reviewed=True, verdict="ok", model_id=model_id), limit=MAX_SCAN, offset=0
    )
    goods = [r for r in recs if r.review_verdict == "ok" and r.image_available][:limit]
    goods.reverse()
    if not goods:
        why = (
            f"{len(recs)} reviewed good part(s), but their images were not kept or were pruned"
            if recs
            else "no inspection has been reviewed as good yet"
        )
        raise RefitRefused(
            409,
            f"no reviewed good parts with a stored image ({why}): review false alarms and "
            "good parts as OK in the station first (the station keeps images per --keep; "
            "--keep all also keeps the images of parts judged OK)",
        )
    return goods


def models_dir_for(store: Any) -> Path:
    """Where candidate model files are written: ``models/`` beside the image folder."""
    return Path(store.blobs.root).parent / "models"


def _load_unit_space(files: list[Path], shape: tuple[int, int]) -> tuple[np.ndarray, set[str]]:
    from ..io import load_images
    from ..records import sha256

    batch = load_images(files, size=shape)
    if len(batch.paths) == 0:
        first = batch.errors[0][1] if batch.errors else "no readable image"
        raise RefitRefused(409, f"no unit-space image could be read: {first}")
    digests = {sha256(Path(p).read_bytes()) for p in batch.paths}
    return np.asarray(batch.images, dtype=np.float64), digests


def _decode(store: Any, rec: Any, shape: tuple[int, int]) -> np.ndarray | None:
    from ..io import decode_image

    data = store.image(rec.id)
    if data is None:
        return None
    try:
        return np.asarray(decode_image(data, f"record {rec.id}", size=shape), dtype=np.float64)
    except (GaikanError, ValueError):
        return None


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._") or "model"


def build_candidate(
    model: Any,
    *,
    store: Any,
    model_id: str,
    parent_version: int | None,
    unit_space: str | os.PathLike | None,
    old_threshold: float,
    goods: list[Any] | None = None,
    models_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fit, save, register (inactive) and assess a candidate; its summary.

    Parameters
    ----------
    model : fitted gaikan detector
        The served model; its clone is fitted.
    store : gaikan.records.RecordStore
    model_id : str
    parent_version : int or None
        The served version (the candidate's parent).
    unit_space : path-like
        The unit-space folder (``--unit-space``).
    old_threshold : float
        The served threshold (reported beside the candidate's).
    goods : list of Record, optional
        The reviewed goods (default: :func:`reviewed_goods`).
    models_dir : path-like, optional
        Where the model file goes (default: :func:`models_dir_for`).

    Returns
    -------
    dict
        ``version`` (the candidate id), ``model_id``, ``parent_version``,
        ``file``, ``digest``, ``already_registered``, ``old_threshold``,
        ``new_threshold``, ``n_unit_space``, ``n_reviewed_goods``,
        ``n_images``, ``skipped`` (duplicates, unreadable), ``relabel``
        (see :func:`relabel_counts`), ``fit_s``, ``active`` (False).

    Raises
    ------
    RefitRefused
        No unit space or no reviewed goods (409), a model without a fit (422).
    gaikan.errors.GaikanError, ValueError
        The fit itself failed (the message says why).
    """
    from .._params import clone
    from ..records.versions import file_digest

    check_refittable(model)
    files = unit_space_files(unit_space)
    if goods is None:
        goods = reviewed_goods(store, model_id)
    shape = (int(model.image_shape_[0]), int(model.image_shape_[1]))
    unit, seen = _load_unit_space(files, shape)
    extra, used_ids, dup, unreadable = [], [], 0, 0
    for rec in goods:
        if rec.digest is not None and rec.digest in seen:
            dup += 1
            continue
        img = _decode(store, rec, shape)
        if img is None:
            unreadable += 1
            continue
        if rec.digest is not None:
            seen.add(rec.digest)
        extra.append(img)
        used_ids.append(rec.id)
    if not extra:
        raise RefitRefused(
            409,
            f"none of the {len(goods)} reviewed good image(s) adds to the unit space "
            f"({dup} already in it, {unreadable} unreadable): review other good parts as OK",
        )
    X = np.concatenate([unit, np.stack(extra)])
    t0 = time.perf_counter()
    cand = clone(model)
    cand.fit(X)
    fit_s = time.perf_counter() - t0

    out_dir = Path(models_dir) if models_dir is not None else models_dir_for(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{_safe_name(model_id)}-{uuid.uuid4().hex}.gaikan"
    try:
        cand.save(tmp)
        digest = file_digest(tmp)
        final = out_dir / f"{_safe_name(model_id)}-{digest[:12]}.gaikan"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    known = {v.digest for v in store.model_versions(model_id)}
    mv = store.register_model(
        model_id,
        final,
        digest=digest,
        threshold=float(cand.threshold_),
        note=(
            f"refit from {len(extra)} reviewed good image(s) + {len(unit)} unit-space "
            f"image(s) (records {_id_list(used_ids)})"
        ),
        parent_version=parent_version,
    )
    return {
        "version": mv.version,
        "model_id": model_id,
        "parent_version": mv.parent_version,
        "file": final.name,
        "digest": digest,
        "already_registered": digest in known,
        "old_threshold": float(old_threshold),
        "new_threshold": float(cand.threshold_),
        "n_unit_space": len(unit),
        "n_reviewed_goods": len(extra),
        "n_images": len(X),
        "reviewed_good_ids": used_ids[:_MAX_IDS],
        "skipped": {"duplicates": dup, "unreadable": unreadable},
        "relabel": relabel_counts(store, model_id, cand, shape),
        "fit_s": round(fit_s, 3),
        "active": mv.active,
    }


def _id_list(ids: list[int]) -> str:
    if len(ids) <= 20:
        return ", ".join(map(str, ids))
    return ", ".join(map(str, ids[:20])) + f" … {len(ids)} in all"


def relabel_counts(
    store: Any, model_id: str | None, candidate: Any, shape: tuple[int, int]
) -> dict[str, Any]:
    """Re-score the stored images of past records with ``candidate``; what would change.

    The past verdict is the model's (``verdict``: ``ok`` or ``defect``), as
    recorded; the new one is ``defect`` exactly when the candidate's score
    exceeds its threshold.  At most :data:`MAX_RESCORE` records per verdict
    (newest first, among the newest :data:`MAX_SCAN` records) are re-scored.

    Returns
    -------
    dict
        ``ng_scored``, ``ng_to_ok``, ``ok_scored``, ``ok_to_ng``;
        ``ng_to_ok_reviewed_ok`` (false alarms the candidate clears),
        ``ng_to_ok_reviewed_ng`` (defects an operator confirmed that the
        candidate would pass: the number to look at before activating);
        ``ng_to_ok_ids`` / ``ok_to_ng_ids`` (up to 200 each); ``unscored``
        (kept images that could not be decoded or scored).
    """
    from ..records import Filters

    thr = float(candidate.threshold_)
    out: dict[str, Any] = {"threshold": thr, "unscored": 0}
    for past, new, key in (("defect", "ok", "ng_to_ok"), ("ok", "defect", "ok_to_ng")):
        recs = _with_images(store, Filters(model_id=model_id), past)
        flipped: list[Any] = []
        scored = 0
        for i in range(0, len(recs), _CHUNK):
            chunk = recs[i : i + _CHUNK]
            imgs, keep = [], []
            for rec in chunk:
                img = _decode(store, rec, shape)
                if img is None:
                    out["unscored"] += 1
                else:
                    imgs.append(img)
                    keep.append(rec)
            if not imgs:
                continue
            scores = np.asarray(candidate.anomaly_score(np.stack(imgs)), dtype=np.float64)
            for rec, s in zip(keep, scores):
                if not np.isfinite(s):
                    out["unscored"] += 1
                    continue
                scored += 1
                if ("defect" if s > thr else "ok") == new:
                    flipped.append(rec)
        prefix = "ng" if past == "defect" else "ok"
        out[f"{prefix}_scored"] = scored
        out[key] = len(flipped)
        out[f"{key}_ids"] = [r.id for r in flipped[:_MAX_IDS]]
        if past == "defect":
            out["ng_to_ok_reviewed_ok"] = sum(r.review_verdict == "ok" for r in flipped)
            out["ng_to_ok_reviewed_ng"] = sum(r.review_verdict == "defect" for r in flipped)
    return out


def _with_images(store: Any, base: Any, verdict: str) -> list[Any]:
    """Newest records with this *model* verdict whose image is kept (up to MAX_RESCORE)."""
    out: list[Any] = []
    offset, page = 0, 1000
    while len(out) < MAX_RESCORE and offset < MAX_SCAN:
        recs = store.query(base, limit=page, offset=offset)
        if not recs:
            break
        out.extend(r for r in recs if r.verdict == verdict and r.image_available)
        offset += len(recs)
    return out[:MAX_RESCORE]
