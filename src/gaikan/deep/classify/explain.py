"""Where a classifier looked: explanation maps at the image's resolution.

Two families, one contract — (n, H, W) float64 maps on the input image,
each scaled to [0, 1], higher = more relevant (like anomaly maps):

- :func:`cam_maps`: class-activation maps of :mod:`gaikan.deep.cam`
  (Grad-CAM, LayerCAM, EigenCAM, attention rollout) on the network input,
  brought back to the image by the input pipeline (resized, or pasted
  into the focus window);
- :func:`integrated_gradients` (Sundararajan et al. 2017) from the mean
  good image to the image: which pixels' *differences from a good part*
  raised the class score.  Pixel-sharp (no upsampled feature grid).

:func:`resolve_layer` turns ``cam_layer="auto"`` into the stride-16 stage;
:func:`target_indices` turns class labels into column indices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._optional import require
from ...errors import ParameterError
from .inputs import InputPipeline

__all__ = ["cam_maps", "integrated_gradients", "resolve_layer", "target_indices"]

#: ``part`` values of :func:`integrated_gradients`.
IG_PARTS = ("positive", "abs", "signed")


def resolve_layer(model: Any, layer: str | None) -> str | None:
    """``"auto"`` → the last stage at stride 16 in timm's ``feature_info`` (else None).

    Any other value is returned as is (None: the last feature map).
    """
    if layer != "auto":
        return layer
    info: Any = getattr(model, "feature_info", None)
    try:
        entries = [(f["module"], int(f["reduction"])) for f in info]
    except (TypeError, KeyError):
        return None
    mods = dict(model.named_modules())
    cands = [m for m, r in entries if r == 16 and m in mods]
    return cands[-1] if cands else None


def target_indices(classes: np.ndarray, target: Any, n: int) -> np.ndarray | None:
    """Class labels (one, or one per image) → indices into ``classes``, shape (n,); None stays None."""
    if target is None:
        return None
    t = np.asarray(target)
    t = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
    idx = np.searchsorted(classes, t)
    if np.any(idx >= classes.size) or np.any(classes[np.minimum(idx, classes.size - 1)] != t):
        raise ParameterError(f"target {target!r} is not among the classes {classes.tolist()}")
    return idx


def cam_maps(
    model: Any,
    pipe: InputPipeline,
    X: np.ndarray,
    *,
    method: str,
    targets: np.ndarray | None,
    layer: str | None,
    device: str,
) -> np.ndarray:
    """CAM-family maps (:func:`gaikan.deep.cam.explain_model`) on the image.

    Parameters
    ----------
    model : torch.nn.Module (eval mode)
    pipe : InputPipeline
    X : ndarray, shape (n, H, W) or (n, H, W, 3), checked
    method : {"gradcam", "layercam", "eigencam", "rollout"}
    targets : ndarray of int, shape (n,), or None (the predicted class)
    layer : str or None

    Returns
    -------
    ndarray, shape (n, H, W), float64, in [0, 1]
    """
    from .. import cam

    maps = []
    for s in range(0, X.shape[0], 32):
        Xc = X[s : s + 32]
        boxes = pipe.focus_boxes(Xc)
        x = pipe.expand(pipe.encode(Xc, boxes)).to(device)
        tgt = None if targets is None else targets[s : s + 32]
        m = cam.explain_model(model, x, method=method, target=tgt, layer=layer)
        maps.append(pipe.to_input_maps(m, Xc.shape[1:3], boxes))
    return np.concatenate(maps)


def integrated_gradients(
    model: Any,
    pipe: InputPipeline,
    X: np.ndarray,
    *,
    targets: np.ndarray | None,
    steps: int,
    smooth: float,
    part: str,
    normalize: bool,
    device: str,
) -> np.ndarray:
    """Integrated gradients against ``pipe.reference``, shape (n, H, W).

    Attribution of pixel p: ``(x_p − r_p) · mean_α ∂f_c/∂x_p`` along the
    straight path ``r + α(x − r)`` (midpoint rule, ``steps`` points), with
    ``r`` the mean good image and ``f_c`` the class logit; see
    :meth:`gaikan.deep.classify.Classifier.integrated_gradients` for the
    parameters.  X must be checked and at the reference's size.
    """
    torch = require("torch", "deep")
    ref = pipe.reference
    assert ref is not None
    alphas = (np.arange(steps) + 0.5) / steps
    out = []
    model.eval()
    base = torch.from_numpy(pipe.raw_channels(ref[None].astype(np.float32))).to(device)
    for s in range(0, X.shape[0], 16):
        x = torch.from_numpy(np.ascontiguousarray(pipe.raw_channels(X[s : s + 16]), np.float32)).to(
            device
        )
        # the window is fixed by the image (|x_α − r| = α|x − r| peaks in the same place)
        boxes = pipe.focus_boxes(X[s : s + 16])
        if targets is None:
            with torch.no_grad():
                tgt = model(pipe.expand(pipe.encode_tensor(x, boxes=boxes))).argmax(1)
        else:
            tgt = torch.as_tensor(targets[s : s + 16], device=device)
        grad = torch.zeros_like(x)
        for a in alphas:
            xa = (base + float(a) * (x - base)).requires_grad_(True)
            with torch.enable_grad():
                logits = model(pipe.expand(pipe.encode_tensor(xa, boxes=boxes)))
                score = logits.gather(1, tgt.view(-1, 1).long()).sum()
                (g,) = torch.autograd.grad(score, xa)
            grad += g
        attr = ((x - base) * grad / steps).sum(1)
        if part == "positive":
            attr = attr.clamp_min(0)
        elif part == "abs":
            attr = attr.abs()
        out.append(attr.detach().cpu().numpy().astype(np.float64))
    maps = np.concatenate(out)
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        maps = gaussian_filter(maps, sigma=(0, smooth, smooth), mode="nearest")
    if not normalize:
        return maps
    hi = maps.reshape(len(maps), -1).max(1)
    return maps / np.where(hi > 0, hi, 1.0)[:, None, None]
