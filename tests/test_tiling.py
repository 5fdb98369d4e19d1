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


def _frames(n, seed, shape=(150, 210)):
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.sin(np.arange(shape[0]) / 7) * 30, np.cos(np.arange(shape[1]) / 9) * 30)
    return np.stack([base + 128 + rng.normal(0, 3, shape) for _ in range(n)]).round()


@pytest.mark.parametrize("per_position", [True, False])
def test_tiled_detector_finds_a_small_defect_in_a_large_frame(per_position):
    import gaikan
    from gaikan.detectors.tiled import TiledDetector

    det = TiledDetector(
        "rt", {"kernel": 8, "stride": 4}, tile=48, overlap=12, per_position=per_position
    ).fit(_frames(8, 0))
    test = _frames(3, 1)
    test[2, 100:110, 150:160] += 50  # a 10-px defect near a tile border
    res = det.detect(test)
    assert res.maps.shape == test.shape
    assert res.scores[2] > det.threshold_ and res.scores[2] > 5 * res.scores[:2].max()
    row, col = np.unravel_index(res.maps[2].argmax(), test.shape[1:])
    assert 100 <= row < 110 and 150 <= col < 160
    # frame score = max of its tile scores; the map's peak sits in the worst tile
    tiles = det.patch_scores(test)
    assert np.allclose(tiles.reshape(3, -1).max(1), res.scores)
    # memory is bounded by the tile batch: one tile at a time gives the same answer
    one = gaikan.clone(det).set_params(tile_batch=1).fit(_frames(8, 0)).detect(test)
    assert np.allclose(one.scores, res.scores) and np.allclose(one.maps, res.maps)


def test_fit_tile_cli_and_inspect_peak_in_frame_pixels(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    import gaikan
    from gaikan.cli import cli

    good, test = tmp_path / "good", tmp_path / "test"
    good.mkdir()
    test.mkdir()
    for i, f in enumerate(_frames(6, 2)):
        Image.fromarray(f.clip(0, 255).astype(np.uint8)).save(good / f"{i}.png")
    bad = _frames(1, 3)[0]
    bad[40:52, 20:32] -= 60
    Image.fromarray(bad.clip(0, 255).astype(np.uint8)).save(test / "bad.png")
    model = tmp_path / "m.gaikan"
    args = [
        "fit",
        str(good),
        "-o",
        str(model),
        "--detector",
        "rt",
        "--kernel",
        "8",
        "--stride",
        "4",
    ]
    res = CliRunner().invoke(cli, [*args, "--tile", "48", "--overlap", "8"])
    assert res.exit_code == 0, res.output
    det = gaikan.load(model)
    assert det.kind == "tiled" and det.image_shape_ == (150, 210) and len(det.inners_) > 1
    res = CliRunner().invoke(cli, ["inspect", str(model), str(test), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    import csv

    (row,) = csv.DictReader(open(tmp_path / "o" / "results.csv"))
    assert row["verdict"] == "defect"
    assert 40 <= int(row["peak_row"]) < 52 and 20 <= int(row["peak_col"]) < 32
