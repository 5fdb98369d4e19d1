"""Tiles of a large frame and the stitching of their maps: arrays in, arrays out.

A frame (H, W) is covered by square tiles of side ``tile`` whose starts are
``tile − overlap`` apart along each axis; the last tile of a row or column
is moved back so that it ends at the frame's border, so every pixel is
covered and every tile lies wholly inside the frame (no padding, no
partial tiles).  A frame smaller than a tile along an axis is refused: the
caller resizes or pads it first.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

__all__ = ["cut_tiles", "stitch_max", "tile_grid", "tile_starts"]


def tile_starts(length: int, tile: int, overlap: int) -> np.ndarray:
    """Start offsets of the tiles along one axis of ``length`` pixels.

    Parameters
    ----------
    length, tile, overlap : int
        ``length ≥ tile > overlap ≥ 0``.

    Returns
    -------
    ndarray of int, shape (k,)
        Increasing, first 0, last ``length − tile``; consecutive starts are
        at most ``tile − overlap`` apart.
    """
    if not (0 <= overlap < tile):
        raise ParameterError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length < tile:
        raise ParameterError(f"a side of {length} px is shorter than the tile ({tile} px)")
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return np.asarray(starts, dtype=np.intp)


def tile_grid(shape: tuple[int, int], tile: int, overlap: int) -> np.ndarray:
    """(row, col) start of every tile of a frame, row-major, shape (t, 2)."""
    rows = tile_starts(int(shape[0]), tile, overlap)
    cols = tile_starts(int(shape[1]), tile, overlap)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def cut_tiles(frame: np.ndarray, starts: np.ndarray, tile: int) -> np.ndarray:
    """The tiles of ``frame`` (H, W) at ``starts`` (t, 2), shape (t, tile, tile).

    A view-free copy: the frame can be released afterwards.
    """
    out = np.empty((len(starts), tile, tile), dtype=frame.dtype)
    for i, (r, c) in enumerate(starts):
        out[i] = frame[r : r + tile, c : c + tile]
    return out


def stitch_max(
    maps: np.ndarray, starts: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """Place tile maps (t, tile, tile) into a frame map (H, W), the maximum where they overlap.

    ``out`` (float, (H, W)) accumulates across calls, so tiles can be
    stitched batch by batch; pass None to start a new map (filled with −inf
    and set to 0 where no tile has landed yet at the end).
    """
    tile = maps.shape[1]
    if out is None:
        out = np.full(shape, -np.inf)
    for m, (r, c) in zip(maps, starts):
        view = out[r : r + tile, c : c + tile]
        np.maximum(view, m, out=view)
    return out
