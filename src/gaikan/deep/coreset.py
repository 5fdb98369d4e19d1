"""Greedy k-center coreset of patch features, blockwise on a random projection.

Exact greedy k-center costs (kept) × (patches) distance evaluations — the
reason reference implementations take minutes for 100 images.  Here the
greedy distances are computed on a seeded Gaussian random projection to
``projection_dim`` dimensions (Johnson–Lindenstrauss: distances are kept
within a small relative error), and the greedy runs *blockwise*: the
patches are split by a seeded permutation into blocks of about ``block``
patches and every block is thinned by greedy k-center at the same ratio,
all blocks advancing together in one batched matrix-vector product per
step.  Cost: ratio × block × patches × projection_dim instead of
ratio × patches² × dim.  Used by :class:`gaikan.deep.PatchCore` and the
distributed fit (:mod:`gaikan.distributed.padim`).
"""

from __future__ import annotations

import numpy as np

from .._optional import require
from ..errors import ParameterError

__all__ = ["greedy_coreset"]


def greedy_coreset(
    features,
    ratio: float,
    *,
    projection_dim: int = 64,
    block: int = 2048,
    random_state: int | None = 0,
):
    """Indices of a blockwise greedy k-center coreset.

    Parameters
    ----------
    features : array-like or torch.Tensor, shape (N, d)
    ratio : float
        Fraction of patches to keep, in (0, 1].
    projection_dim : int
        Dimension of the seeded Gaussian random projection used for the
        greedy distances (no projection when ≥ d).
    block : int
        Patches per greedy block.
    random_state : int or None

    Returns
    -------
    ndarray of int64, shape (K,)
        Sorted, unique indices into ``features``; K ≈ ratio·N.
    """
    torch = require("torch", "deep")
    x = torch.as_tensor(features)
    n, d = x.shape
    if not 0.0 < ratio <= 1.0:
        raise ParameterError(f"coreset ratio must be in (0, 1], got {ratio}")
    if ratio >= 1.0 or n <= 1:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    perm = torch.from_numpy(rng.permutation(n))
    if projection_dim and projection_dim < d:
        proj = torch.from_numpy(
            (rng.standard_normal((d, projection_dim)) / np.sqrt(projection_dim)).astype(np.float32)
        )
    else:
        proj = None
    n_blocks = max(1, round(n / max(1, int(block))))
    size = -(-n // n_blocks)  # blocks of `size`, the last ones padded
    pad = n_blocks * size - n
    # Pad with each block's own first element (a duplicate never wins the
    # farthest-point step: it is at distance 0 from the first pick).
    idx = torch.cat([perm, perm[:pad]]) if pad else perm
    idx = idx.view(size, n_blocks).T.contiguous()  # (B, size): interleaved ⇒ padding spread
    if pad:
        idx[n_blocks - pad :, -1] = idx[n_blocks - pad :, 0]
    chunks = []
    for i in range(0, n_blocks * size, 1 << 16):  # project in slices (bounds memory)
        sl = idx.view(-1)[i : i + (1 << 16)]
        v = x[sl].float()
        chunks.append(v @ proj if proj is not None else v)
    z = torch.cat(chunks).view(n_blocks, size, -1)
    sq = (z * z).sum(-1)
    k = max(1, int(np.ceil(ratio * size)))
    rows = torch.arange(n_blocks)
    cur = torch.zeros(n_blocks, dtype=torch.long)  # start: a random element (perm order)
    mind = torch.full((n_blocks, size), float("inf"))
    picks = torch.empty(n_blocks, k, dtype=torch.long)
    for step in range(k):
        picks[:, step] = cur
        s = z[rows, cur]  # (B, p)
        dist = sq - 2.0 * torch.bmm(z, s[:, :, None])[..., 0] + (s * s).sum(-1, keepdim=True)
        torch.minimum(mind, dist, out=mind)
        cur = mind.argmax(dim=1)
    chosen = torch.gather(idx, 1, picks).reshape(-1).numpy()
    return np.unique(chosen)
