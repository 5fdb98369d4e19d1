import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaikan.tiling import cut_tiles, stitch_max, tile_grid, tile_starts


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 400), st.integers(4, 64), st.data())
def test_tiles_cover_every_pixel_and_stay_inside(length, tile, data):
    if length < tile:
        with pytest.raises(ValueError):
            tile_starts(length, tile, 0)
        return
    overlap = data.draw(st.integers(0, tile - 1))
    s = tile_starts(length, tile, overlap)
    assert s[0] == 0 and s[-1] == length - tile
    assert np.all(np.diff(s) > 0) and np.all(np.diff(s) <= tile - overlap)
    covered = np.zeros(length, bool)
    for a in s:
        covered[a : a + tile] = True
    assert covered.all()


def test_stitch_inverts_cut_and_takes_the_max():
    rng = np.random.default_rng(0)
    frame = rng.random((70, 95))
    starts = tile_grid(frame.shape, 32, 8)
    tiles = cut_tiles(frame, starts, 32)
    assert np.array_equal(stitch_max(tiles, starts, frame.shape), frame)
    # batch by batch gives the same map
    out = None
    for i in range(0, len(starts), 3):
        out = stitch_max(tiles[i : i + 3], starts[i : i + 3], frame.shape, out)
    assert np.array_equal(out, frame)
    bumped = tiles.copy()
    bumped[0] += 1.0
    st_map = stitch_max(bumped, starts, frame.shape)
    assert np.allclose(st_map[:32, :32], frame[:32, :32] + 1.0)
