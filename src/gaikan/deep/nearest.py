"""Nearest bank entries of query rows: PatchCore's search, in cache-sized blocks.

Three pieces, each on torch tensors (float32):

- :func:`nearest`: the k nearest bank rows of every query row, exactly, by
  ``‖b‖² − 2 f·b`` blocks of ~1M entries (4 MB: near a core's 2 MB L2,
  not the shared L3);
- :func:`smallest`: the k smallest entries of each row of a block, in two
  exact passes (group minima, then the best groups' entries);
- :func:`rerank`: the exact nearest among given candidate rows (the second
  step of PatchCore's two-step search, after :func:`nearest` in the bank's
  leading principal directions).

The search is bound by writing and re-reading the distance block: a block of
every query against a slice of the bank (the order before stop 20) spilled
to memory; 4M-entry blocks (stop 20) to the shared L3, ~30 % slower than 1M
on the 2-core machine of the benchmarks (docs/benchmarks.md).
"""

from __future__ import annotations

from .._optional import require

__all__ = ["BLOCK", "GROUP", "nearest", "rerank", "smallest"]

#: Entries of one distance block (query rows × bank rows).
BLOCK = 1 << 20

#: Columns per group in :func:`smallest`'s first pass.
GROUP = 64


def smallest(d, k: int):
    """The k smallest entries of each row of d (r, K) and their columns, ascending.

    Equal to ``torch.topk(d, k, largest=False)`` up to the order of ties, in
    two passes that are cheaper on wide rows: the minimum of every group of
    :data:`GROUP` consecutive columns, the k groups with the smallest
    minima, then the k smallest of those k groups' entries.  Exact: a
    column among the k smallest lies in a group whose minimum is no larger
    than it, and fewer than k groups can have a smaller minimum.  On the
    PatchCore search (K ≈ 23k) this halves the selection's time, which was a
    fifth of the scoring's.

    Parameters
    ----------
    d : torch.Tensor, shape (r, K)
    k : int
        1 ≤ k ≤ K.

    Returns
    -------
    values : torch.Tensor, shape (r, k)
    indices : torch.Tensor, shape (r, k), int64
    """
    torch = require("torch", "deep")
    r, K = d.shape
    if k == 1:  # a min is ~2× cheaper than a top-1
        return d.min(dim=1, keepdim=True)
    n = K // GROUP
    if n < 8 * k:  # too few groups to pay for the second pass
        return torch.topk(d, k, dim=1, largest=False)
    groups = d[:, : n * GROUP].view(r, n, GROUP)  # a view: rows are contiguous
    _, g = torch.topk(groups.amin(dim=2), k, dim=1, largest=False)  # (r, k)
    sub = torch.gather(groups, 1, g[:, :, None].expand(r, k, GROUP)).reshape(r, k * GROUP)
    v, j = torch.topk(sub, k, dim=1, largest=False)
    i = torch.gather(g, 1, j // GROUP) * GROUP + j % GROUP
    if n * GROUP < K:  # the last, partial group: merged as k more candidates
        vt, it = torch.topk(d[:, n * GROUP :], min(k, K - n * GROUP), dim=1, largest=False)
        v, i = torch.cat([v, vt], 1), torch.cat([i, it + n * GROUP], 1)
        v, j = torch.topk(v, k, dim=1, largest=False)
        i = torch.gather(i, 1, j)
    return v, i


def nearest(f, bank, bsq, exclude=None, k: int = 1):
    """The k smallest squared distances of each row of f to the bank, and their rows.

    Parameters
    ----------
    f : torch.Tensor, shape (q, d)
    bank : torch.Tensor, shape (K, d)
    bsq : torch.Tensor, shape (K,)
        Squared norms of the bank's rows.
    exclude : torch.Tensor of bool, shape (K,), optional
        Bank rows never returned (a training image's own entries).
    k : int

    Returns
    -------
    d2 : torch.Tensor, shape (q, min(k, K))
        Ascending, clamped at 0.
    index : torch.Tensor of int64, shape (q, min(k, K))
    """
    torch = require("torch", "deep")
    rows = max(16, BLOCK // max(1, bank.shape[0]))
    parts = [
        _nearest_rows(f[s : s + rows], bank, bsq, exclude, k) for s in range(0, f.shape[0], rows)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _nearest_rows(f, bank, bsq, exclude, k: int):
    """:func:`nearest` for one chunk of query rows (bank slices of ≤ ~1M entries)."""
    torch = require("torch", "deep")
    best_d, best_i = [], []
    step = max(256, BLOCK // max(1, f.shape[0]))
    fsq = (f * f).sum(1, keepdim=True)
    for s in range(0, bank.shape[0], step):
        blk = bank[s : s + step]
        # ‖b‖² − 2 f·b ranks the bank like the squared distance (‖f‖² is the row's
        # constant, added to the kept values only): one pass less over the block
        d = torch.addmm(bsq[s : s + step][None], f, blk.T, alpha=-2.0)
        if exclude is not None:
            d[:, exclude[s : s + step]] = float("inf")
        v, i = smallest(d, min(k, d.shape[1]))
        best_d.append(v)
        best_i.append(i + s)
    if len(best_d) == 1:
        v, i = best_d[0], best_i[0]
    else:
        d, i = torch.cat(best_d, 1), torch.cat(best_i, 1)
        v, j = smallest(d, min(k, d.shape[1]))
        i = torch.gather(i, 1, j)
    return (v + fsq).clamp_min(0.0), i


def rerank(f, bank, bsq, cand):
    """The exact nearest of each row of f among its candidate bank rows.

    Parameters
    ----------
    f : torch.Tensor, shape (q, d)
    bank : torch.Tensor, shape (K, d)
    bsq : torch.Tensor, shape (K,)
    cand : torch.Tensor of int64, shape (q, m)

    Returns
    -------
    d2 : torch.Tensor, shape (q, 1)
    index : torch.Tensor of int64, shape (q, 1)
    """
    torch = require("torch", "deep")
    out_d, out_i = [], []
    for s in range(0, f.shape[0], 64):  # (64, m, d) gathered rows at a time: in L2
        c, q = cand[s : s + 64], f[s : s + 64]
        (r, m), flat = c.shape, c.reshape(-1)
        # index_select gathers ~1.5× faster than advanced indexing; then
        # ‖b‖² − 2 b·f (+ ‖f‖²): one pass over the gathered rows, not three
        rows = torch.index_select(bank, 0, flat).view(r, m, -1)
        near = torch.index_select(bsq, 0, flat).view(r, m, 1)
        d2 = torch.baddbmm(near, rows, q[:, :, None], alpha=-2.0)[:, :, 0]
        v, j = d2.min(dim=1, keepdim=True)
        out_d.append((v + (q * q).sum(1, keepdim=True)).clamp_min(0.0))
        out_i.append(torch.gather(c, 1, j))
    return torch.cat(out_d), torch.cat(out_i)
