"""Class-activation maps and attention rollout: where a classifier looked.

All public functions take a timm model in eval mode and a normalised input
batch ``x`` of shape (n, c, h, w) and return torch maps of shape (n, h, w)
at the input resolution, each scaled to [0, 1] (higher = more relevant),
the convention of gaikan's anomaly maps.

- :func:`grad_cam` — Grad-CAM (Selvaraju et al., ICCV 2017): channel
  weights = spatial mean of the class score's gradient.
- :func:`layer_cam` — LayerCAM (Jiang et al., TIP 2021): element-wise
  positive gradients; sharper, and usable on earlier (finer) layers.
- :func:`eigen_cam` — EigenCAM (Muhammad & Yeasin, IJCNN 2020):
  gradient-free, the first principal component of the activations.
- :func:`attention_rollout` — attention rollout (Abnar & Zuidema, ACL
  2020) for ViTs: the product over layers of head-averaged attention plus
  identity (the residual path), read from the class token.  timm computes
  attention with fused ``scaled_dot_product_attention`` which never
  materialises the matrix, so fusion is switched off on every attention
  module for the call (and restored) and the softmax output is read from
  the ``attn_drop`` module with a forward hook.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

from ..errors import ParameterError

__all__ = [
    "attention_matrices",
    "attention_rollout",
    "eigen_cam",
    "explain_model",
    "grad_cam",
    "layer_cam",
    "normalize_maps",
    "resize_maps",
    "rollout",
]


def _torch():
    from .._optional import require

    return require("torch", "deep")


def normalize_maps(maps):
    """Scale each map of (n, h, w) to [0, 1] by its min and max (flat maps → 0)."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    span = hi - lo
    out = (flat - lo) / span.clamp_min(1e-12)
    out = out * (span > 1e-12)
    return out.reshape(maps.shape)


def resize_maps(maps, size: Sequence[int]):
    """Bilinear resize of (n, h, w) maps to ``size`` = (H, W)."""
    torch = _torch()
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    out = torch.nn.functional.interpolate(
        maps[:, None].float(), size=size, mode="bilinear", align_corners=False
    )[:, 0]
    return out


def _to_grid(act, model):
    """Activations → (n, C, gh, gw): CNN maps pass; ViT tokens lose the prefix and fold."""
    if act.ndim == 4:
        return act
    if act.ndim != 3:
        raise ParameterError(
            f"cannot make a spatial map from activations of shape {tuple(act.shape)}"
        )
    n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    tok = act[:, n_prefix:]
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or grid[0] * grid[1] != tok.shape[1]:
        side = round(math.sqrt(tok.shape[1]))
        if side * side != tok.shape[1]:
            raise ParameterError("token count is not a square grid; pass layer=")
        grid = (side, side)
    return tok.transpose(1, 2).reshape(act.shape[0], act.shape[2], int(grid[0]), int(grid[1]))


def _forward_with_acts(model, x, layer: str | None):
    """Run the model, returning (activations at ``layer``, logits)."""
    if layer is None and hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        feats = model.forward_features(x)
        return feats, model.forward_head(feats)
    modules = dict(model.named_modules())
    if layer is None:
        raise ParameterError("model has no forward_features/forward_head; pass layer=")
    if layer not in modules:
        raise ParameterError(f"no module named {layer!r} in the model")
    store = {}

    def hook(_m, _inp, out):
        store["act"] = out

    h = modules[layer].register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        h.remove()
    return store["act"], logits


def _grads(model, x, target, layer):
    torch = _torch()
    with torch.enable_grad():
        x = x.detach().requires_grad_(False)
        act, logits = _forward_with_acts(model, x, layer)
        if target is None:
            target = logits.argmax(1)
        target = torch.as_tensor(target, device=logits.device, dtype=torch.long).view(-1)
        score = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)
    return act.detach(), grad.detach()


def grad_cam(model, x, target=None, layer: str | None = None):
    """Grad-CAM maps, shape (n, h, w) at the input resolution, in [0, 1].

    Parameters
    ----------
    model : timm model (eval mode)
    x : tensor, shape (n, c, h, w)
    target : int array-like of shape (n,) or None
        Class index per image (default: the predicted class).
    layer : str or None
        Module name; default the last feature map (``forward_features``).
    """
    act, grad = _grads(model, x, target, layer)
    a, g = _to_grid(act, model), _to_grid(grad, model)
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = (w * a).sum(1).clamp_min(0)
    return normalize_maps(resize_maps(cam, x.shape[-2:]))


def layer_cam(model, x, target=None, layer: str | None = None):
    """LayerCAM maps (element-wise positive gradients × activations), (n, h, w) in [0, 1]."""
    act, grad = _grads(model, x, target, layer)
    a, g = _to_grid(act, model), _to_grid(grad, model)
    cam = (g.clamp_min(0) * a).sum(1).clamp_min(0)
    return normalize_maps(resize_maps(cam, x.shape[-2:]))


def eigen_cam(model, x, layer: str | None = None):
    """EigenCAM maps (gradient-free), (n, h, w) in [0, 1].

    The activations of each image, as a (positions × channels) matrix, are
    centred and projected on their first right singular vector; the sign is
    chosen so that the projection correlates positively with the summed
    activation (an SVD's sign is arbitrary).
    """
    torch = _torch()
    with torch.no_grad():
        act, _ = _forward_with_acts(model, x, layer)
        a = _to_grid(act, model).float()
        n, c, h, w = a.shape
        m = a.reshape(n, c, h * w).transpose(1, 2)  # (n, hw, C)
        mc = m - m.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(mc, full_matrices=False)
        proj = (mc @ vh[:, 0, :, None])[..., 0]  # (n, hw)
        ref = m.sum(2)
        ref = ref - ref.mean(1, keepdim=True)
        sign = torch.sign((proj * ref).sum(1, keepdim=True))
        sign[sign == 0] = 1
        cam = (proj * sign).clamp_min(0).reshape(n, h, w)
    return normalize_maps(resize_maps(cam, x.shape[-2:]))


def _attention_modules(model):
    return [m for m in model.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]


@contextmanager
def _unfused(model):
    mods = _attention_modules(model)
    old = [m.fused_attn for m in mods]
    try:
        for m in mods:
            m.fused_attn = False
        yield mods
    finally:
        for m, o in zip(mods, old):
            m.fused_attn = o


def attention_matrices(model, x) -> list:
    """Softmax attention of every block: list of (n, heads, N, N) tensors.

    Switches timm's fused attention off for the call (restored after) and
    reads the matrices from each block's ``attn_drop`` with a forward hook.
    """
    torch = _torch()
    store: list = []
    with _unfused(model) as mods:
        if not mods:
            raise ParameterError("model has no timm attention modules (is it a ViT?)")
        hooks = [
            m.attn_drop.register_forward_hook(lambda _m, _i, o: store.append(o.detach()))
            for m in mods
        ]
        try:
            with torch.no_grad():
                logits = model(x)
        finally:
            for h in hooks:
                h.remove()
    if len(store) != len(mods):
        raise RuntimeError("attention hooks did not fire; unsupported attention module")
    del logits
    return store


def rollout(
    attns: Sequence, head_fusion: str = "mean", residual: float = 0.5, discard_ratio: float = 0.0
):
    """Attention rollout matrix, shape (n, N, N); every row sums to 1.

    Parameters
    ----------
    attns : sequence of (n, heads, N, N) tensors
        Row-stochastic attention of each layer, first layer first.
    head_fusion : {"mean", "max", "min"}
    residual : float
        Weight of the identity (skip connection): ``Â = r·I + (1-r)·A``.
    discard_ratio : float
        Share of the smallest attention weights (class-token column kept)
        zeroed per layer before renormalising; removes noise.
    """
    torch = _torch()
    result = None
    for a in attns:
        if head_fusion == "mean":
            f = a.mean(1)
        elif head_fusion == "max":
            f = a.amax(1)
        elif head_fusion == "min":
            f = a.amin(1)
        else:
            raise ParameterError("head_fusion must be 'mean', 'max' or 'min'")
        f = f.float()
        if discard_ratio > 0:
            n, N, _ = f.shape
            flat = f.reshape(n, -1).clone()
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                keyed = flat.clone()
                keyed.view(n, N, N)[:, :, 0] = float("inf")  # never drop the class-token column
                idx = keyed.topk(k, dim=1, largest=False).indices
                flat.scatter_(1, idx, 0.0)
            f = flat.reshape(n, N, N)
            f = f / f.sum(-1, keepdim=True).clamp_min(1e-12)
        eye = torch.eye(f.shape[-1], device=f.device, dtype=f.dtype)
        f = residual * eye + (1 - residual) * f
        f = f / f.sum(-1, keepdim=True)
        result = f if result is None else f @ result
    return result


def attention_rollout(
    model, x, head_fusion: str = "mean", residual: float = 0.5, discard_ratio: float = 0.0
):
    """Attention-rollout maps of a timm ViT, (n, h, w) at input resolution, in [0, 1].

    The class token's row of the rollout matrix, restricted to the patch
    tokens, folded to the patch grid and upsampled.  Models without a class
    token (global-pool ViTs) use the mean row over patch tokens.
    """
    R = rollout(attention_matrices(model, x), head_fusion, residual, discard_ratio)
    n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    has_cls = bool(getattr(model, "cls_token", None) is not None)
    row = R[:, 0, n_prefix:] if has_cls else R[:, n_prefix:, n_prefix:].mean(1)
    grid = _to_grid(row[:, None, :].transpose(1, 2).reshape(R.shape[0], -1, 1), _NoPrefix(model))
    return normalize_maps(resize_maps(grid[:, 0], x.shape[-2:]))


class _NoPrefix:
    """Model view whose tokens carry no prefix (already stripped)."""

    num_prefix_tokens = 0

    def __init__(self, model):
        self.patch_embed = getattr(model, "patch_embed", None)


def explain_model(model, x, method: str = "gradcam", target=None, layer: str | None = None):
    """Dispatch to one explanation method; maps (n, h, w) in [0, 1]."""
    if method == "gradcam":
        return grad_cam(model, x, target, layer)
    if method == "layercam":
        return layer_cam(model, x, target, layer)
    if method == "eigencam":
        return eigen_cam(model, x, layer)
    if method == "rollout":
        return attention_rollout(model, x)
    raise ParameterError(f"unknown explanation method {method!r}")
